package server

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-logr/logr"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fakeReviews answers TokenReviews (token "reader" and "other" are users,
// "broken" fails) and SubjectAccessReviews (only "reader" may get /metrics),
// and counts the calls. The real API server answers them in test/chart's
// TestInstall (401, 403, 200 through the chart's RBAC).
type fakeReviews struct{ tokenReviews, accessReviews int }

func (f *fakeReviews) CreateToken(_ context.Context, r *authenticationv1.TokenReview, _ metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	f.tokenReviews++
	switch r.Spec.Token {
	case "broken":
		return nil, errors.New("connection refused")
	case "reader", "other":
		r.Status = authenticationv1.TokenReviewStatus{Authenticated: true, User: authenticationv1.UserInfo{Username: r.Spec.Token, Groups: []string{"g"}}}
	}
	return r, nil
}

func (f *fakeReviews) CreateAccess(_ context.Context, r *authorizationv1.SubjectAccessReview, _ metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	f.accessReviews++
	a := r.Spec.NonResourceAttributes
	r.Status.Allowed = r.Spec.User == "reader" && a.Verb == "get" && a.Path == "/metrics"
	return r, nil
}

type tokenFunc func(context.Context, *authenticationv1.TokenReview, metav1.CreateOptions) (*authenticationv1.TokenReview, error)

func (f tokenFunc) Create(ctx context.Context, r *authenticationv1.TokenReview, o metav1.CreateOptions) (*authenticationv1.TokenReview, error) {
	return f(ctx, r, o)
}

type accessFunc func(context.Context, *authorizationv1.SubjectAccessReview, metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error)

func (f accessFunc) Create(ctx context.Context, r *authorizationv1.SubjectAccessReview, o metav1.CreateOptions) (*authorizationv1.SubjectAccessReview, error) {
	return f(ctx, r, o)
}

func TestMetricsAuth(t *testing.T) {
	fake := &fakeReviews{}
	now := time.Unix(1_800_000_000, 0)
	a := newMetricsAuthorizer(tokenFunc(fake.CreateToken), accessFunc(fake.CreateAccess), func() time.Time { return now })
	get := func(auth, path string) int {
		t.Helper()
		mf, err := metricsAuthFilter(a)(logr.Discard(), http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
		if err != nil {
			t.Fatal(err)
		}
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		rr := httptest.NewRecorder()
		mf.ServeHTTP(rr, r)
		return rr.Code
	}
	for _, tt := range []struct {
		name, auth, path string
		want             int
	}{
		{"no token", "", "/metrics", http.StatusUnauthorized},
		{"not a bearer token", "Basic cmVhZGVyOng=", "/metrics", http.StatusUnauthorized},
		{"empty bearer token", "Bearer ", "/metrics", http.StatusUnauthorized},
		{"unknown token", "Bearer nobody", "/metrics", http.StatusUnauthorized},
		{"TokenReview fails", "Bearer broken", "/metrics", http.StatusInternalServerError},
		{"authenticated, not allowed", "Bearer other", "/metrics", http.StatusForbidden},
		{"allowed", "Bearer reader", "/metrics", http.StatusOK},
		{"scheme in lower case", "bearer reader", "/metrics", http.StatusOK},
		{"allowed /metrics only", "Bearer reader", "/debug", http.StatusForbidden},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := get(tt.auth, tt.path); got != tt.want {
				t.Errorf("HTTP %d, want %d", got, tt.want)
			}
		})
	}

	t.Run("answers are cached: tokens 1 minute, allowed 5 minutes, denied 30 seconds", func(t *testing.T) {
		tokens, accesses := fake.tokenReviews, fake.accessReviews
		get("Bearer reader", "/metrics")
		get("Bearer other", "/metrics")
		if fake.tokenReviews != tokens || fake.accessReviews != accesses {
			t.Fatalf("%d TokenReviews and %d SubjectAccessReviews for cached answers", fake.tokenReviews-tokens, fake.accessReviews-accesses)
		}
		now = now.Add(31 * time.Second) // the denial expires, not the rest
		get("Bearer reader", "/metrics")
		get("Bearer other", "/metrics")
		if fake.tokenReviews != tokens || fake.accessReviews != accesses+1 {
			t.Fatalf("after 31s: %d TokenReviews, %d SubjectAccessReviews; want 0, 1", fake.tokenReviews-tokens, fake.accessReviews-accesses)
		}
		now = now.Add(30 * time.Second) // tokens expire
		get("Bearer reader", "/metrics")
		if fake.tokenReviews != tokens+1 || fake.accessReviews != accesses+1 {
			t.Fatalf("after 61s: %d TokenReviews, %d SubjectAccessReviews; want 1, 1", fake.tokenReviews-tokens, fake.accessReviews-accesses)
		}
	})
}
