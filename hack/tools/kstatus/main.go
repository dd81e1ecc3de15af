// kstatus reads Kubernetes objects as JSON on stdin (one object, or a List of them) and prints,
// for each, the readiness that kstatus computes (what Flux and Helm 4 use):
//
//	<kind>/<name> <Current|InProgress|Failed|Terminating|Unknown|NotFound> <message>
//
// It exists for the readiness conformance tests (tests/readiness.rs). `--version` prints the
// pinned cli-utils version, for hack/build-tools.
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// version is the pinned sigs.k8s.io/cli-utils version (set by hack/build-tools with -X).
var version = "unknown"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Printf("kstatus (sigs.k8s.io/cli-utils) %s\n", version)
		return
	}
	data, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(data); err != nil {
		fail("decoding stdin: %v", err)
	}
	var objects []unstructured.Unstructured
	if obj.IsList() {
		list, err := obj.ToList()
		if err != nil {
			fail("decoding the list: %v", err)
		}
		objects = list.Items
	} else {
		objects = []unstructured.Unstructured{*obj}
	}
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for i := range objects {
		o := &objects[i]
		res, err := status.Compute(o)
		if err != nil {
			fail("computing the status of %s/%s: %v", o.GetKind(), o.GetName(), err)
		}
		msg := strings.ReplaceAll(res.Message, "\n", " ")
		fmt.Fprintf(out, "%s/%s %s %s\n", o.GetKind(), o.GetName(), res.Status, msg)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(1)
}
