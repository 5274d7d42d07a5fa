// Package apiserver implements the policies on how kube-apiserver is probed
// and advertised: apiserver-probe-host and apiserver-advertise-address.
package apiserver

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/endpoint-policy/endpoint-policy/internal/policy"
)

const (
	// ContainerName is the kube-apiserver container's name in kubeadm's
	// static pod manifest (and most others).
	ContainerName = "kube-apiserver"

	// ComponentLabel=ComponentValue is the label kubeadm (and most
	// distributions) put on kube-apiserver pods. The admission front-end
	// caches only the pods that carry it.
	ComponentLabel = "component"
	ComponentValue = "kube-apiserver"

	advertiseAddressFlag = "--advertise-address"
)

// IsAPIServer reports whether c runs kube-apiserver: it is named
// kube-apiserver, or its command (or, without a command, its args) starts
// with a kube-apiserver binary.
func IsAPIServer(c *corev1.Container) bool { return policy.RunsBinary(c, ContainerName) }

// AdvertiseAddress returns the value of c's --advertise-address flag, in
// either the "--advertise-address=IP" or the "--advertise-address IP" form,
// and the field path of the element that holds it (under fldPath, the
// container's path). When the flag is given more than once the last one
// wins, as with kube-apiserver's flag parser. ok is false without the flag.
func AdvertiseAddress(c *corev1.Container, fldPath *field.Path) (value string, at *field.Path, ok bool) {
	scan := func(list []string, name string) {
		for i, arg := range list {
			switch {
			case arg == advertiseAddressFlag && i+1 < len(list):
				value, at, ok = list[i+1], fldPath.Child(name).Index(i+1), true
			case strings.HasPrefix(arg, advertiseAddressFlag+"="):
				value, at, ok = strings.TrimPrefix(arg, advertiseAddressFlag+"="), fldPath.Child(name).Index(i), true
			}
		}
	}
	// The container runtime runs command followed by args.
	scan(c.Command, "command")
	scan(c.Args, "args")
	return value, at, ok
}

// parseIP parses an IP literal (IPv4-mapped IPv6 addresses as IPv4, without
// an IPv6 zone) so that the same address always compares equal. ok is false
// for anything that is not an IP literal (DNS names, "$(HOST_IP)").
func parseIP(s string) (netip.Addr, bool) {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, false
	}
	return addr.WithZone("").Unmap(), true
}
