// Command sleeper waits for SIGTERM or SIGINT and exits 0: the real node
// suite's pause (pod sandbox) image and the stand-in for the static pods'
// images (kube-apiserver, kube-vip), which the kubelet only has to run.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
