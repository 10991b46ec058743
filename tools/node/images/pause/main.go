// Command pause is the sandbox ("pause") container of the local node: it holds a Pod's
// namespaces, reaps orphaned children (it is PID 1 when the Pod shares its PID namespace)
// and exits on SIGINT or SIGTERM. No registry is reachable here, so the node cannot pull
// registry.k8s.io/pause: this program is built from the repository and packed as an OCI
// image by tools/devenv (ociimage.py).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
