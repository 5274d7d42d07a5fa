package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/endpoint-policy/endpoint-policy/internal/config"
	"github.com/endpoint-policy/endpoint-policy/internal/controller"
	"github.com/endpoint-policy/endpoint-policy/internal/policy/kubeproxy"
	"github.com/endpoint-policy/endpoint-policy/internal/server"
	epwebhook "github.com/endpoint-policy/endpoint-policy/internal/webhook"
)

var _ = Describe("faults under load", func() {
	It("keeps creating pods when the webhook is killed (mutation fails open), and the audit reports the pods admitted without the rewrite", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		r := startReplica("a", "")
		lb := newLoadBalancer()
		lb.add(r)
		withoutWebhooks(ctx, func() {
			faultWebhook(ctx, ns, "https://"+lb.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Ignore, 3, nil)
			untilMutated(ctx, ns)
			l := startLoad(ctx, ns, 3)
			l.waitFor(30)
			Expect(l.unrewritten.Load()).To(BeZero(), "rewritten while the webhook is up")

			By("killing the webhook (SIGKILL) under load")
			r.kill()
			_, _ = r.waitExit(settle)
			l.waitFor(30)
			l.end()
			Expect(l.failed.Load()).To(BeZero(), "pod creations failed: %v", l.errors())
			Expect(l.unrewritten.Load()).To(BeNumerically(">=", 30), "admitted without the rewrite while the webhook was dead")
		})

		By("the suite's server's background audit counts exactly the pods admitted without the rewrite")
		pods := &corev1.PodList{}
		Expect(k8s.List(ctx, pods, client.InNamespace(ns))).To(Succeed())
		var unrewritten float64
		for _, p := range pods.Items {
			if len(p.Spec.Containers[0].Env) == 0 {
				unrewritten++
			}
		}
		Expect(unrewritten).To(BeNumerically(">=", 30))
		Eventually(violations("host-network-endpoint", ns, "Pod")).WithTimeout(settle).WithPolling(polling).Should(Equal(unrewritten))
	})

	It("loses no admission call in a rolling restart of two replicas (SIGTERM): not ready first, in-flight finished, kept-alive connections closed, exit within the grace period", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		lb := newLoadBalancer()
		a, b := startReplica("a", ""), startReplica("b", "")
		lb.add(a)
		lb.add(b)
		withoutWebhooks(ctx, func() {
			// Fail closed here, so that a failed call is a failed pod creation.
			faultWebhook(ctx, ns, "https://"+lb.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Fail, 3, nil)
			untilMutated(ctx, ns)
			l := startLoad(ctx, ns, 3)
			l.waitFor(20)
			for i, old := range []*replica{a, b} {
				By(fmt.Sprintf("replacing replica %s", old.name))
				next := startReplica(fmt.Sprintf("new-%d", i), "")
				lb.add(next)
				Eventually(lb.isReady).WithArguments(next).WithTimeout(settle).Should(BeTrue())
				sigterm := time.Now()
				old.terminate()
				Eventually(lb.isReady).WithArguments(old).WithTimeout(5*time.Second).WithPolling(50*time.Millisecond).
					Should(BeFalse(), "not ready as soon as SIGTERM arrives")
				// The grace period: --shutdown-delay (1s here), then at most
				// server.ShutdownTimeout.
				_, err := old.waitExit(time.Second + server.ShutdownTimeout)
				Expect(err).NotTo(HaveOccurred(), "exit status after SIGTERM")
				GinkgoWriter.Printf("replica %s exited %s after SIGTERM\n", old.name, time.Since(sigterm))
				lb.remove(old)
				Expect(old.logs.String()).To(ContainSubstring("Shutting down: not ready"))
				l.waitFor(20)
			}
			l.end()
			Expect(l.failed.Load()).To(BeZero(), "failed admission calls: %v", l.errors())
			Expect(l.unrewritten.Load()).To(BeZero())
			Expect(l.created.Load()).To(BeNumerically(">=", 60))
		})
	})

	It("serves a rotated certificate within seconds without failing a call, and keeps the old one when the new pair is broken", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		ca := newTestCA()
		dir := GinkgoT().TempDir()
		crt1, key1 := ca.issue()
		writePair(dir, crt1, key1)
		r := startReplica("a", dir)
		lb := newLoadBalancer()
		lb.add(r)
		withoutWebhooks(ctx, func() {
			faultWebhook(ctx, ns, "https://"+lb.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Fail, 3, ca.pem)
			untilMutated(ctx, ns)
			l := startLoad(ctx, ns, 3)
			l.waitFor(20)
			Expect(servedSerialAt(r.addr())).To(Equal(firstSerial(crt1)))

			By("rotating tls.crt and tls.key on disk")
			crt2, key2 := ca.issue()
			writePair(dir, crt2, key2)
			Eventually(servedSerialAt).WithArguments(r.addr()).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).
				Should(Equal(firstSerial(crt2)))
			l.waitFor(20)

			By("writing a certificate with a key that is not its own")
			crt3, _ := ca.issue()
			writePair(dir, crt3, key2)
			Eventually(r.logs.String).WithTimeout(10 * time.Second).Should(ContainSubstring("error re-reading certificate"))
			Consistently(servedSerialAt).WithArguments(r.addr()).WithTimeout(2 * time.Second).Should(Equal(firstSerial(crt2)))
			l.waitFor(20)
			l.end()
			Expect(l.failed.Load()).To(BeZero(), "failed admission calls: %v", l.errors())
			Expect(l.unrewritten.Load()).To(BeZero())
		})
	})

	It("honors the webhook timeout: a fail-open webhook that does not answer does not stop pod creation", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		lb := newLoadBalancer()
		lb.stall.Store(true)
		withoutWebhooks(ctx, func() {
			faultWebhook(ctx, ns, "https://"+lb.addr()+epwebhook.MutatePodPath, admissionregistrationv1.Ignore, 1, nil)
			// Once the API server calls the stalled webhook, a create waits
			// for its timeout (1s), then succeeds without the rewrite.
			Eventually(func() (time.Duration, error) {
				p := pod(ns, true, nil)
				start := time.Now()
				err := k8s.Create(ctx, p)
				if err == nil && len(p.Spec.Containers[0].Env) > 0 {
					return 0, StopTrying("rewritten by a webhook that never answers")
				}
				return time.Since(start), err
			}).WithTimeout(settle).WithPolling(polling).Should(BeNumerically(">=", time.Second),
				"the API server waited for the webhook's timeout, then admitted the pod")
		})
	})
})

var _ = Describe("slow or missing cluster state", func() {
	It("answers admission from its caches without waiting on the API server: a cold cache gives no verdict, in time", func(ctx context.Context) {
		By("starting a replica whose every list and watch is refused: its caches never fill")
		metricsAddr := freeAddr()
		r := startReplica("cold", "", "--kubeconfig="+kubeconfigOf("cold-cache"),
			"--metrics-bind-address="+metricsAddr, "--metrics-secure=false")
		Eventually(r.logs.String).WithTimeout(settle).Should(ContainSubstring("forbidden"))
		decisions := func() string {
			GinkgoHelper()
			resp, err := http.Get("http://" + metricsAddr + "/metrics")
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			Expect(err).NotTo(HaveOccurred())
			var lines []string
			for _, l := range strings.Split(string(body), "\n") {
				if strings.HasPrefix(l, "endpoint_policy_admission_decisions_total{") {
					lines = append(lines, l)
				}
			}
			return strings.Join(lines, "\n")
		}

		post := func(path string, obj runtime.Object) (*admissionv1.AdmissionResponse, time.Duration) {
			GinkgoHelper()
			raw, err := json.Marshal(obj)
			Expect(err).NotTo(HaveOccurred())
			review := admissionv1.AdmissionReview{
				TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
				Request: &admissionv1.AdmissionRequest{
					UID: types.UID("cold-1"), Operation: admissionv1.Create,
					Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
					Namespace: "kube-system", Object: runtime.RawExtension{Raw: raw},
				},
			}
			body, err := json.Marshal(review)
			Expect(err).NotTo(HaveOccurred())
			roots := x509.NewCertPool()
			roots.AppendCertsFromPEM(testEnv.WebhookInstallOptions.LocalServingCAData)
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
			start := time.Now()
			// The API server's own query: ?timeout=<timeoutSeconds>s.
			resp, err := c.Post("https://"+r.addr()+path+"?timeout=3s", "application/json", bytes.NewReader(body))
			took := time.Since(start)
			Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			out := admissionv1.AdmissionReview{}
			Expect(json.NewDecoder(resp.Body).Decode(&out)).To(Succeed())
			Expect(out.Response).NotTo(BeNil())
			return out.Response, took
		}

		By("a kube-apiserver mirror pod: apiserver-advertise-address, which needs the other API servers' pods, gives no verdict")
		mirror := asMirrorPod(apiServerPod("kube-system", "cp-unknown", apiServerContainer("", "--advertise-address=10.0.0.11")))
		resp, took := post(epwebhook.ValidateWorkloadsPath, mirror)
		Expect(resp.Allowed).To(BeTrue())
		Expect(resp.Warnings).To(BeEmpty())
		Expect(took).To(BeNumerically("<", 3*time.Second), "answered within the webhook's timeoutSeconds")
		Expect(decisions()).To(And(
			ContainSubstring(`action="allow",policy="apiserver-probe-host"`), // needs no cluster state
			Not(ContainSubstring(`policy="apiserver-advertise-address"`))))

		By("a kube-proxy mirror pod on a node the cache has never seen: kube-proxy-node-deleting gives no verdict")
		kp := kubeProxyPod("kube-system", "node-unknown")
		kp.Labels = map[string]string{"component": "kube-proxy"}
		resp, took = post(epwebhook.MutatePodPath, asMirrorPod(kp))
		Expect(resp.Allowed).To(BeTrue())
		Expect(resp.Patch).To(BeEmpty())
		Expect(took).To(BeNumerically("<", 3*time.Second))
		Expect(decisions()).NotTo(ContainSubstring(`policy="kube-proxy-node-deleting"`))

		By("a hostNetwork pod: rewritten, which needs no cluster state")
		resp, took = post(epwebhook.MutatePodPath, pod("kube-system", true, nil))
		Expect(resp.Allowed).To(BeTrue())
		Expect(string(resp.Patch)).To(ContainSubstring("KUBERNETES_SERVICE_HOST"))
		Expect(took).To(BeNumerically("<", 3*time.Second))
		Expect(r.logs.String()).NotTo(ContainSubstring("panic"))
	})
})

var _ = Describe("leader election", func() {
	It("moves the controllers to the other replica when the leader is killed; no annotation lost or made twice", func(ctx context.Context) {
		ns := newNamespace(ctx, nil)
		By("granting the ServiceAccount the leader election Role in this namespace")
		grantLeaderElection(ctx, ns)
		configPath := filepath.Join(GinkgoT().TempDir(), "config.yaml")
		// kube-proxy pods labelled for this spec only: the suite's server
		// selects the default labels and leaves these alone.
		Expect(os.WriteFile(configPath, []byte(configYAML(func(c *config.PolicyConfiguration) {
			c.Policies[kubeproxy.NodeDeletingID].Settings.(*kubeproxy.Settings).PodSelectors = []metav1.LabelSelector{{MatchLabels: map[string]string{"leader-test": ns}}}
		})), 0o600)).To(Succeed())
		leFlags := []string{"--config=" + configPath, "--leader-elect=true", "--leader-election-namespace=" + ns,
			"--leader-election-lease-duration=3s", "--leader-election-renew-deadline=2s", "--leader-election-retry-period=500ms"}

		nodes := []*corev1.Node{newWorker(ctx), newWorker(ctx), newWorker(ctx)}
		var kubeProxies []*corev1.Pod
		for _, n := range nodes {
			p := kubeProxyPod(ns, n.Name)
			p.Labels = map[string]string{"leader-test": ns}
			kubeProxies = append(kubeProxies, create(ctx, p))
		}

		a, b := startReplica("a", "", leFlags...), startReplica("b", "", leFlags...)
		leader := func() *replica {
			for _, r := range []*replica{a, b} {
				if strings.Contains(r.logs.String(), "Successfully acquired lease") {
					return r
				}
			}
			return nil
		}
		Eventually(leader).WithTimeout(settle).ShouldNot(BeNil())
		first := leader()
		other := map[*replica]*replica{a: b, b: a}[first]

		at1 := time.Now().Add(-time.Minute).Truncate(time.Second)
		taint(ctx, nodes[0], kubeproxy.ToBeDeletedTaint, at1)
		Eventually(annotationsOf(ctx, kubeProxies[0])).WithTimeout(settle).WithPolling(polling).Should(nodeDeleting(kubeproxy.ReasonToBeDeleted, at1))

		By(fmt.Sprintf("killing the leader, replica %s (SIGKILL: the Lease is not released)", first.name))
		first.kill()
		at2 := time.Now().Truncate(time.Second)
		taint(ctx, nodes[1], kubeproxy.ToBeDeletedTaint, at2)
		Eventually(other.logs.String).WithTimeout(settle).Should(ContainSubstring("Successfully acquired lease"))
		Eventually(annotationsOf(ctx, kubeProxies[1])).WithTimeout(settle).WithPolling(polling).Should(nodeDeleting(kubeproxy.ReasonToBeDeleted, at2))

		By("every annotation is there once, as first written, with one Event per pod")
		Expect(annotationsOf(ctx, kubeProxies[0])()).To(nodeDeleting(kubeproxy.ReasonToBeDeleted, at1), "not rewritten by the new leader")
		Consistently(annotationsOf(ctx, kubeProxies[2])).WithTimeout(time.Second).Should(notNodeDeleting)
		for _, p := range kubeProxies[:2] {
			Eventually(eventsFor(ctx, p)).WithTimeout(settle).WithPolling(polling).Should(
				And(HaveLen(1), event(controller.ReasonNodeDeleting, "Annotate", "is being deleted")), "pod %s", p.Name)
		}
	})
})
