package kubevip

// What an advisory's configuration is, as data: each condition reads one
// thing of the kube-vip container (an env var's value, whether it is set,
// the image variant, a mounted kubeconfig), and an advisory applies when
// every condition of one of its alternatives holds.

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Op is what a Condition checks.
type Op string

const (
	// True: Env is set, as a value, to a true boolean as kube-vip parses
	// them (strconv.ParseBool: "true", "1", "True", ...).
	True Op = "true"
	// NotTrue: Env is unset, empty, or a false boolean.
	NotTrue Op = "not-true"
	// Equals: Env is set, as a value, to Value exactly.
	Equals Op = "equals"
	// Unset: Env is absent or empty (kube-vip's default applies).
	Unset Op = "unset"
	// HostName: Env holds a DNS name, not an IP address.
	HostName Op = "hostname"
	// IPv4: Env holds an IPv4 address.
	IPv4 Op = "ipv4"
	// Image: the image is the variant Value names ("kube-vip", without
	// iptables; "kube-vip-iptables"), Rancher's mirrors included.
	Image Op = "image"
	// Mounted: the container mounts a file at the path Env names, or at
	// Value when Env is unset (kube-vip's k8s_config_file, whose default
	// is /etc/kubernetes/admin.conf; kubeadm 1.29+ mounts super-admin.conf
	// there for the first control plane).
	Mounted Op = "mounted"
)

// Condition is one thing an advisory needs of the container.
type Condition struct {
	Env   string
	Op    Op
	Value string
}

// String says the condition as a configuration: "cp_enable=true",
// "kubernetes_addr unset".
func (c Condition) String() string {
	switch c.Op {
	case True:
		return c.Env + "=true"
	case NotTrue:
		return c.Env + " not true"
	case Equals:
		return c.Env + "=" + c.Value
	case Unset:
		return c.Env + " unset"
	case HostName:
		return c.Env + " a DNS name"
	case IPv4:
		return c.Env + " an IPv4 address"
	case Image:
		return "the " + c.Value + " image"
	case Mounted:
		return "a kubeconfig mounted at " + c.Value
	}
	return c.Env + " " + string(c.Op) + " " + c.Value
}

// validate reports a condition the table must not hold.
func (c Condition) validate() error {
	switch c.Op {
	case True, NotTrue, Unset, HostName, IPv4:
		if c.Env == "" || c.Value != "" {
			return fmt.Errorf("%s: needs env and no value", c.Op)
		}
	case Equals:
		if c.Env == "" || c.Value == "" {
			return fmt.Errorf("%s: needs env and value", c.Op)
		}
	case Image:
		if c.Env != "" || !kubeVIPImages[c.Value] {
			return fmt.Errorf("%s: needs a kube-vip image name as value, no env", c.Op)
		}
	case Mounted:
		if c.Env == "" || !strings.HasPrefix(c.Value, "/") {
			return fmt.Errorf("%s: needs env and a default absolute path", c.Op)
		}
	default:
		return fmt.Errorf("unknown op %q", c.Op)
	}
	return nil
}

// holds reports whether the condition holds for container c of image
// repository repo. A value from a ConfigMap or Secret is unknown here: a
// condition on it does not hold (the table never denies on a guess).
func (c Condition) holds(ctr *corev1.Container, repo string) bool {
	switch c.Op {
	case Image:
		return imageVariant(repo) == c.Value
	case Mounted:
		return c.mounted(ctr)
	}
	val, set, literal := envValue(ctr.Env, c.Env)
	check, ok := envChecks[c.Op]
	return ok && check(c, envState{val: val, set: set, literal: literal})
}

// envState is what a container says of one env var: its value, whether it
// is set, and whether the value is literal (not valueFrom).
type envState struct {
	val          string
	set, literal bool
}

// envChecks are the ops on one env var.
var envChecks = map[Op]func(Condition, envState) bool{
	True: func(_ Condition, e envState) bool {
		b, err := strconv.ParseBool(e.val)
		return e.literal && err == nil && b
	},
	NotTrue: func(_ Condition, e envState) bool {
		b, err := strconv.ParseBool(e.val)
		return !e.set || (e.literal && (e.val == "" || (err == nil && !b)))
	},
	Equals: func(c Condition, e envState) bool { return e.literal && e.val == c.Value },
	Unset:  func(_ Condition, e envState) bool { return !e.set || (e.literal && e.val == "") },
	HostName: func(_ Condition, e envState) bool {
		_, err := netip.ParseAddr(e.val)
		return e.literal && e.val != "" && err != nil
	},
	IPv4: func(_ Condition, e envState) bool {
		a, err := netip.ParseAddr(e.val)
		return e.literal && err == nil && a.Is4()
	},
}

// mounted reports whether ctr mounts a file at the path c.Env names, or at
// c.Value when it is unset; not when the path comes from a reference.
func (c Condition) mounted(ctr *corev1.Container) bool {
	val, set, literal := envValue(ctr.Env, c.Env)
	path := c.Value
	if set {
		if !literal {
			return false
		}
		if val != "" {
			path = val
		}
	}
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == path {
			return true
		}
	}
	return false
}

// envValue returns env's last entry of name: its value, whether it is set,
// and whether the value is literal (not valueFrom).
func envValue(env []corev1.EnvVar, name string) (val string, set, literal bool) {
	for _, e := range env {
		if e.Name == name {
			val, set, literal = e.Value, true, e.ValueFrom == nil
		}
	}
	return val, set, literal
}

// imageVariant is "kube-vip" or "kube-vip-iptables" for an image repository
// of either, Rancher's mirrors included.
func imageVariant(repo string) string {
	return strings.TrimPrefix(repo[strings.LastIndexByte(repo, '/')+1:], "mirrored-kube-vip-")
}

// allHold reports whether every condition holds.
func allHold(conds []Condition, ctr *corev1.Container, repo string) bool {
	for _, c := range conds {
		if !c.holds(ctr, repo) {
			return false
		}
	}
	return true
}

// describe says conditions as a configuration, joined with "and".
func describe(conds []Condition) string {
	parts := make([]string, len(conds))
	for i, c := range conds {
		parts[i] = c.String()
	}
	return strings.Join(parts, " and ")
}
