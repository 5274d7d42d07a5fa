package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// pauseImage is the pod sandbox image: the sleeper (test/node/sleeper),
// built here without a registry. The static pods run it too, under their
// upstream images' names (the policies read the image's tag).
const (
	pauseImage         = "endpoint-policy.test/pause:1"
	kubeAPIServerImage = "registry.k8s.io/kube-apiserver:v1.37.2"
	kubeVIPImage       = "ghcr.io/kube-vip/kube-vip:v0.8.4"
)

// sysctls the kubelet sets (kubelet's setupKernelTunables), restored after.
var sysctls = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
	// kube-proxy's, should a flag not keep it from them.
	"net/ipv4/conf/all/route_localnet", "net/ipv4/ip_forward"}

// hostPaths are what the kubelet and containerd make outside their own
// directories whatever they are told (the kubelet's device plugin socket,
// its container log links, containerd's shim sockets, the CNI plugins'
// address leases and network namespaces): removed after, when they were not
// there before.
var hostPaths = []string{"/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni", "/run/netns", "/var/run/netns"}

// realNode is containerd and a kubelet, each a process of the suite, all
// their state under dir.
type realNode struct {
	dir, manifests, socket string
	containerd, kubelet    *exec.Cmd
	sysctls                map[string]string
	cgroupsBefore          map[string]bool
	absent                 []string // of hostPaths, before
	// ruleset is the netfilter ruleset before (nft list ruleset): the
	// kubelet adds chains (KUBE-FIREWALL, which drops non-local traffic
	// to 127.0.0.0/8, and its canaries) through iptables-nft.
	ruleset string
}

func startNode(dir string, kubeconfig []byte) *realNode {
	GinkgoHelper()
	n := &realNode{dir: dir, manifests: filepath.Join(dir, "manifests"), socket: filepath.Join(dir, "containerd.sock"),
		sysctls: map[string]string{}, cgroupsBefore: cgroupDirs()}
	for _, s := range sysctls {
		if v, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			n.sysctls[s] = strings.TrimSpace(string(v))
		}
	}
	for _, p := range hostPaths {
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			n.absent = append(n.absent, p)
		}
	}
	ruleset, err := exec.Command("nft", "list", "ruleset").Output()
	Expect(err).NotTo(HaveOccurred(), "nft list ruleset")
	n.ruleset = string(ruleset)
	for _, d := range []string{"manifests", "containerd-root", "containerd-state", "cni", "kubelet", "pods-logs", "pki"} {
		Expect(os.MkdirAll(filepath.Join(dir, d), 0o750)).To(Succeed())
	}
	Expect(os.WriteFile(filepath.Join(dir, "containerd.toml"), []byte(fmt.Sprintf(containerdConfig, dir, dir, n.socket, pauseImage, dir)), 0o600)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(dir, "cni", "10-bridge.conflist"), []byte(cniConfig), 0o600)).To(Succeed())
	n.containerd = n.start("containerd", "containerd", "--config", filepath.Join(dir, "containerd.toml"))
	Eventually(func() error { return exec.Command("ctr", "-a", n.socket, "version").Run() }).WithTimeout(30 * time.Second).Should(Succeed())

	By("importing the pause image, built here without a registry")
	sleeper := filepath.Join(dir, "sleeper")
	run("go", "build", "-o", sleeper, "./sleeper")
	image := filepath.Join(dir, "image")
	run("go", "-C", "../../hack/image", "run", ".", "--binary", sleeper, "--out", image, "--tag", pauseImage)
	run("ctr", "-a", n.socket, "-n", "k8s.io", "images", "import", filepath.Join(image, "endpoint-policy.tar"))
	for _, name := range []string{kubeAPIServerImage, kubeVIPImage} {
		run("ctr", "-a", n.socket, "-n", "k8s.io", "images", "tag", pauseImage, name)
	}
	kubeProxy := filepath.Join(dir, "kube-proxy-image")
	run("go", "-C", "../../hack/image", "run", ".", "--binary", filepath.Join(os.Getenv("ENDPOINT_POLICY_NODE_ASSETS"), "kube-proxy"),
		"--out", kubeProxy, "--tag", kubeProxyImage)
	run("ctr", "-a", n.socket, "-n", "k8s.io", "images", "import", filepath.Join(kubeProxy, "endpoint-policy.tar"))

	Expect(os.WriteFile(filepath.Join(dir, "kubeconfig"), kubeconfig, 0o600)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(dir, "kubelet.yaml"), []byte(fmt.Sprintf(kubeletConfig, n.manifests, filepath.Join(dir, "pods-logs"))), 0o600)).To(Succeed())
	n.kubelet = n.start("kubelet", filepath.Join(os.Getenv("ENDPOINT_POLICY_NODE_ASSETS"), "kubelet"),
		"--config", filepath.Join(dir, "kubelet.yaml"), "--kubeconfig", filepath.Join(dir, "kubeconfig"),
		"--root-dir", filepath.Join(dir, "kubelet"), "--cert-dir", filepath.Join(dir, "pki"),
		"--container-runtime-endpoint", "unix://"+n.socket, "--hostname-override", nodeName, "--v", "2")
	return n
}

// start runs a process whose output goes to <dir>/<name>.log.
func (n *realNode) start(name, bin string, args ...string) *exec.Cmd {
	GinkgoHelper()
	log, err := os.Create(filepath.Join(n.dir, name+".log"))
	Expect(err).NotTo(HaveOccurred())
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group, so that stop reaches its children; killed
	// with the suite's process if that dies first (a go test timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	Expect(cmd.Start()).To(Succeed(), name)
	return cmd
}

func run(name string, args ...string) {
	GinkgoHelper()
	out, err := exec.Command(name, args...).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "%s %s: %s", name, strings.Join(args, " "), out)
}

// stop stops the kubelet, the pods' containers and containerd, unmounts
// what they mounted, removes the cgroups they made and restores the
// sysctls: the machine as it was, also after a failure.
func (n *realNode) stop() {
	GinkgoHelper()
	if n.kubelet != nil {
		stopProcess(n.kubelet)
	}
	if n.containerd != nil {
		out, _ := exec.Command("ctr", "-a", n.socket, "-n", "k8s.io", "tasks", "ls", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command("ctr", "-a", n.socket, "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", id).Run()
		}
		Eventually(func() string {
			out, _ := exec.Command("ctr", "-a", n.socket, "-n", "k8s.io", "tasks", "ls", "-q").Output()
			for _, id := range strings.Fields(string(out)) {
				_ = exec.Command("ctr", "-a", n.socket, "-n", "k8s.io", "tasks", "delete", id).Run()
			}
			return strings.TrimSpace(string(out))
		}).WithTimeout(30 * time.Second).Should(BeEmpty())
		stopProcess(n.containerd)
	}
	for _, m := range mountsUnder(n.dir) {
		Expect(syscall.Unmount(m, syscall.MNT_DETACH)).To(Succeed(), m)
	}
	for _, d := range newCgroupDirs(n.cgroupsBefore) {
		_ = os.Remove(d) // deepest first; a busy one stays and is reported below
	}
	Expect(newCgroupDirs(n.cgroupsBefore)).To(BeEmpty(), "cgroups left behind")
	for s, v := range n.sysctls {
		Expect(os.WriteFile(filepath.Join("/proc/sys", s), []byte(v), 0o600)).To(Succeed(), s)
	}
	for _, p := range n.absent {
		Expect(os.RemoveAll(p)).To(Succeed())
	}
	run("nft", "flush", "ruleset")
	if strings.TrimSpace(n.ruleset) != "" {
		restore := exec.Command("nft", "-f", "-")
		restore.Stdin = strings.NewReader(n.ruleset)
		out, err := restore.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), "restoring the netfilter ruleset: %s", out)
	}
	after, err := exec.Command("nft", "list", "ruleset").Output()
	Expect(err).NotTo(HaveOccurred())
	Expect(string(after)).To(Equal(n.ruleset), "the netfilter ruleset as it was")
	if out, err := exec.Command("ip", "link", "show", cniBridge).CombinedOutput(); err == nil {
		run("ip", "link", "delete", cniBridge)
	} else if !strings.Contains(string(out), "does not exist") {
		Fail(fmt.Sprintf("ip link show %s: %s", cniBridge, out))
	}
}

// cniBridge is the pod network's bridge (cniConfig).
const cniBridge = "epnode0"

func stopProcess(cmd *exec.Cmd) {
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// mountsUnder returns the mount points under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mounts")
	Expect(err).NotTo(HaveOccurred())
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 1 && strings.HasPrefix(fields[1], dir) {
			out = append(out, fields[1])
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return slices.Compact(out)
}

// cgroupDirs returns every cgroup directory (cgroup v1: each controller's
// hierarchy).
func cgroupDirs() map[string]bool {
	out := map[string]bool{}
	_ = filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			out[p] = true
		}
		return nil
	})
	return out
}

// newCgroupDirs returns the cgroup directories made since before, deepest
// first.
func newCgroupDirs(before map[string]bool) []string {
	var out []string
	for d := range cgroupDirs() {
		if !before[d] {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
	return out
}

// containerdConfig: its own root, state and socket; the CRI plugin with
// restrict_oom_score_adj (root here lacks CAP_SYS_RESOURCE: runc fails
// without it), cgroupfs, overlayfs, the local pause image, and the CNI
// plugins of Debian's containernetworking-plugins.
const containerdConfig = `version = 2
root = "%s/containerd-root"
state = "%s/containerd-state"
[grpc]
  address = "%s"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "%s"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "%s/cni"
`

// cniConfig: a bridge on a private range for pods on the pod network.
const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": "endpoint-policy-node",
  "plugins": [
    {"type": "bridge", "bridge": "epnode0", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.0.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "loopback"}
  ]
}
`

// kubeletConfig: cgroup v1 allowed (these machines mount it), swap
// allowed, cgroupfs, static pods from the suite's directory, pod logs
// under the suite's directory, no read-only port, no healthz port, no
// anonymous access.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
failSwapOn: false
cgroupDriver: cgroupfs
staticPodPath: %s
podLogsDir: %s
readOnlyPort: 0
healthzPort: 0
port: 10250
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
authorization: {mode: Webhook}
# The suite shares the machine's disks: no image garbage collection (the
# images are imported, there is no registry to pull them again) and no
# eviction on a disk that is merely full-ish.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {nodefs.available: "1%%", imagefs.available: "1%%", memory.available: "100Mi"}
`

// passThrough is a TCP pass-through to the API server, as k0s's node-local
// balancer (Envoy, TCP) is: the client's TLS session is the API server's.
// Stop closes its listener and every connection, as a failed node would.
type passThrough struct {
	ln    net.Listener
	to    string
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startPassThrough(listen, to string) *passThrough {
	GinkgoHelper()
	ln, err := net.Listen("tcp", listen)
	Expect(err).NotTo(HaveOccurred(), "listening on %s", listen)
	p := &passThrough{ln: ln, to: to, conns: map[net.Conn]struct{}{}}
	go p.serve()
	DeferCleanup(p.Stop)
	return p
}

func (p *passThrough) Addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

func (p *passThrough) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.to)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		for _, pair := range [][2]net.Conn{{in, out}, {out, in}} {
			go func() {
				_, _ = io.Copy(pair[0], pair[1])
				_ = pair[0].Close()
				_ = pair[1].Close()
			}()
		}
	}
}

// track records the connections, or closes them when the pass-through has
// stopped meanwhile.
func (p *passThrough) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conns == nil {
		for _, c := range conns {
			_ = c.Close()
		}
		return false
	}
	for _, c := range conns {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *passThrough) Stop() {
	_ = p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
