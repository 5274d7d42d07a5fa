package server

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authnclient "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzclient "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Cache lifetimes and the API call timeout of the metrics filter:
// controller-runtime's filters.WithAuthenticationAndAuthorization's.
const (
	tokenCacheTTL  = time.Minute
	allowCacheTTL  = 5 * time.Minute
	denyCacheTTL   = 30 * time.Second
	reviewTimeout  = 10 * time.Second
	maxCacheLength = 1024 // entries; a full cache starts over
)

// metricsAuth is the metrics server's filter: the request's bearer token is
// authenticated with a TokenReview, and its user authorized with a
// SubjectAccessReview for the request's verb on the non-resource URL (get
// /metrics). It is what controller-runtime's
// filters.WithAuthenticationAndAuthorization does, with the same cache
// lifetimes, without its dependency on k8s.io/apiserver (CEL, gRPC,
// OpenTelemetry): that was 30 MB of the binary and 14 MiB of the server's
// RSS (BenchmarkMemory20000Pods, docs/performance.md).
func metricsAuth(cfg *rest.Config, httpClient *http.Client) (metricsserver.Filter, error) {
	authn, err := authnclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	authz, err := authzclient.NewForConfigAndClient(cfg, httpClient)
	if err != nil {
		return nil, err
	}
	return metricsAuthFilter(newMetricsAuthorizer(authn.TokenReviews(), authz.SubjectAccessReviews(), time.Now)), nil
}

// metricsAuthFilter is the filter on a.
func metricsAuthFilter(a *metricsAuthorizer) metricsserver.Filter {
	return func(log logr.Logger, handler http.Handler) (http.Handler, error) {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			user, err := a.authenticate(r)
			if err != nil {
				log.Error(err, "Authentication failed")
				http.Error(w, "Authentication failed", http.StatusInternalServerError)
				return
			}
			if user == nil {
				http.Error(w, "Unauthorized", http.StatusUnauthorized)
				return
			}
			allowed, err := a.authorize(r.Context(), user, strings.ToLower(r.Method), r.URL.Path)
			if err != nil {
				log.Error(err, "Authorization failed", "user", user.Username)
				http.Error(w, "Authorization for user "+user.Username+" failed", http.StatusInternalServerError)
				return
			}
			if !allowed {
				http.Error(w, "Authorization denied for user "+user.Username, http.StatusForbidden)
				return
			}
			handler.ServeHTTP(w, r)
		}), nil
	}
}

type cached[T any] struct {
	value   T
	expires time.Time
}

type tokenReviewer interface {
	Create(context.Context, *authenticationv1.TokenReview, metav1.CreateOptions) (*authenticationv1.TokenReview, error)
}

type accessReviewer interface {
	Create(context.Context, *authorizationv1.SubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)
}

func newMetricsAuthorizer(authn tokenReviewer, authz accessReviewer, now func() time.Time) *metricsAuthorizer {
	return &metricsAuthorizer{authn: authn, authz: authz, now: now,
		users: map[[sha256.Size]byte]cached[*authenticationv1.UserInfo]{}, decisions: map[string]cached[bool]{}}
}

// metricsAuthorizer asks the API server, and remembers its answers.
type metricsAuthorizer struct {
	authn tokenReviewer
	authz accessReviewer
	now   func() time.Time

	mu        sync.Mutex
	users     map[[sha256.Size]byte]cached[*authenticationv1.UserInfo] // by the token's hash; nil user: not authenticated
	decisions map[string]cached[bool]                                  // by user, verb and path
}

// authenticate returns the user of r's bearer token; nil when there is no
// token or the API server does not authenticate it.
func (a *metricsAuthorizer) authenticate(r *http.Request) (*authenticationv1.UserInfo, error) {
	scheme, token, _ := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return nil, nil
	}
	key := sha256.Sum256([]byte(token))
	if c, ok := lookup(a, a.users, key); ok {
		return c, nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), reviewTimeout)
	defer cancel()
	review, err := a.authn.Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("TokenReview: %w", err)
	}
	var user *authenticationv1.UserInfo
	if review.Status.Authenticated {
		user = &review.Status.User
	}
	store(a, a.users, key, user, tokenCacheTTL)
	return user, nil
}

// authorize asks whether user may verb the non-resource URL path.
func (a *metricsAuthorizer) authorize(ctx context.Context, user *authenticationv1.UserInfo, verb, path string) (bool, error) {
	key := strings.Join([]string{user.Username, user.UID, strings.Join(user.Groups, ","), verb, path}, "\x00")
	if allowed, ok := lookup(a, a.decisions, key); ok {
		return allowed, nil
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range user.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	ctx, cancel := context.WithTimeout(ctx, reviewTimeout)
	defer cancel()
	review, err := a.authz.Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: user.Username, UID: user.UID, Groups: user.Groups, Extra: extra,
		NonResourceAttributes: &authorizationv1.NonResourceAttributes{Verb: verb, Path: path},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, fmt.Errorf("SubjectAccessReview: %w", err)
	}
	ttl := denyCacheTTL
	if review.Status.Allowed {
		ttl = allowCacheTTL
	}
	store(a, a.decisions, key, review.Status.Allowed, ttl)
	return review.Status.Allowed, nil
}

func lookup[K comparable, V any](a *metricsAuthorizer, m map[K]cached[V], key K) (V, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := m[key]
	if !ok || a.now().After(c.expires) {
		var zero V
		return zero, false
	}
	return c.value, true
}

func store[K comparable, V any](a *metricsAuthorizer, m map[K]cached[V], key K, value V, ttl time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(m) >= maxCacheLength {
		clear(m)
	}
	m[key] = cached[V]{value: value, expires: a.now().Add(ttl)}
}
