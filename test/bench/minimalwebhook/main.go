// Command minimalwebhook is the floor of make bench: the smallest mutating
// webhook that does endpoint-policy's host-network-endpoint rewrite, with
// net/http and encoding/json only. No policy engine, no configuration, no
// metrics, no logging. It is the reference the server's CPU per review and
// added latency are compared with (docs/performance.md); it is not a product.
package main

import (
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"strconv"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

type op struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

var want = []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "localhost"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "7443"}}

// patch returns the JSON patch that sets want in every container of a
// hostNetwork pod and adds the endpoint annotation.
func patch(pod *corev1.Pod) []op {
	if !pod.Spec.HostNetwork {
		return nil
	}
	if _, mirror := pod.Annotations[corev1.MirrorPodAnnotationKey]; mirror {
		return nil
	}
	var ops []op
	containers := func(list string, cs []corev1.Container) {
		for i, c := range cs {
			path := "/spec/" + list + "/" + strconv.Itoa(i) + "/env"
			if len(c.Env) == 0 {
				ops = append(ops, op{"add", path, want})
				continue
			}
		vars:
			for _, w := range want {
				for j, e := range c.Env {
					if e.Name == w.Name {
						if e.Value != w.Value || e.ValueFrom != nil {
							ops = append(ops, op{"replace", path + "/" + strconv.Itoa(j), w})
						}
						continue vars
					}
				}
				ops = append(ops, op{"add", path + "/-", w})
			}
		}
	}
	containers("initContainers", pod.Spec.InitContainers)
	containers("containers", pod.Spec.Containers)
	if len(ops) == 0 {
		return nil
	}
	if pod.Annotations == nil {
		return append(ops, op{"add", "/metadata/annotations", map[string]string{"endpoint-policy.io/endpoint": "localhost:7443"}})
	}
	return append(ops, op{"add", "/metadata/annotations/endpoint-policy.io~1endpoint", "localhost:7443"})
}

func mutate(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview request: %v", err), http.StatusBadRequest)
		return
	}
	resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object.Raw, &pod); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ops := patch(&pod); len(ops) > 0 {
		p, err := json.Marshal(ops)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = p, &pt
	}
	review.Request, review.Response = nil, resp
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9443", "listen address")
	cert := flag.String("cert", "tls.crt", "serving certificate")
	key := flag.String("key", "tls.key", "serving key")
	flag.Parse()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /mutate", mutate)
	// HTTP/1.1 only, as endpoint-policy serves by default (--enable-http2),
	// so that both are called the same way.
	srv := &http.Server{Addr: *addr, Handler: mux, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}
