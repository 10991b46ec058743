// Command kstatus prints the kstatus verdict (Current, InProgress, Failed, ...) for each
// Kubernetes object read from stdin as JSON (one object, or a List), using the same
// library as Argo CD's and Flux's health checks: sigs.k8s.io/cli-utils/pkg/kstatus.
// The e2e tests use it to show that vectorschema's status is kstatus-compatible.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail(err)
	}
	items := []unstructured.Unstructured{*obj}
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fail(err)
		}
		items = list.Items
	}
	out := []map[string]string{}
	for i := range items {
		u := &items[i]
		res, err := status.Compute(u)
		if err != nil {
			fail(err)
		}
		out = append(out, map[string]string{
			"name":    u.GetNamespace() + "/" + u.GetName(),
			"status":  res.Status.String(),
			"message": res.Message,
		})
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(out); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kstatus:", err)
	os.Exit(1)
}
