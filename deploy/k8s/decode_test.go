package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// decodeStrict decodes one YAML document into v as the API server does,
// and stricter: duplicate keys, unknown fields and fields whose case differs
// from the type's are errors.
func decodeStrict(doc []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(j, v)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// splitDocuments splits a YAML stream at its "---" lines, as kubectl does,
// and drops documents that hold only comments.
func splitDocuments(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		var v any
		if err := yaml.Unmarshal(doc, &v); err != nil {
			return nil, err
		}
		if v != nil {
			docs = append(docs, doc)
		}
	}
}

// The strict decoder refuses what kubectl would silently drop or the API
// server refuse, so the tests that rely on it mean something.
func TestDecodeStrictRefuses(t *testing.T) {
	type spec struct {
		ClusterIP string `json:"clusterIP"`
	}
	var v struct {
		Spec spec `json:"spec"`
	}
	for doc, want := range map[string]string{
		"spec: {clusterIP: None, clusterIp: x}": `unknown field "spec.clusterIp"`,
		"spec: {clusterip: None}":               `unknown field "spec.clusterip"`,
		"spec: {clusterIP: None}\nspec: {}":     `key "spec" already set`,
		"spec: {clusterIP: [None]}":             "cannot unmarshal array",
	} {
		err := decodeStrict([]byte(doc), &v)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error with %q", doc, err, want)
		}
	}
	if err := decodeStrict([]byte("spec: {clusterIP: None}"), &v); err != nil || v.Spec.ClusterIP != "None" {
		t.Errorf("a good document: %v, %+v", err, v)
	}
	docs, err := splitDocuments([]byte("# only a comment\n---\na: 1\n---\n\n---\nb: 2\n"))
	if err != nil || len(docs) != 2 {
		t.Errorf("split: %d documents, %v; want 2", len(docs), err)
	}
}

// geoproxyBinary builds cmd/geoproxy of the repository once, to run the
// command lines the deployment files give it.
var geoproxyBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "geoproxy-deploy")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "geoproxy")
	out, err := exec.Command("go", "build", "-C", "../..", "-o", bin, "./cmd/geoproxy").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/geoproxy: %v\n%s", err, out)
	}
	return bin, nil
})

var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// acceptsFlags checks that geoproxy takes this command line (a command and
// its flags) by running it with -h appended: flags it does not know fail
// before -h is reached.
func acceptsFlags(t *testing.T, args []string) {
	t.Helper()
	bin, err := geoproxyBinary()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(bin, append(append([]string{}, args...), "-h")...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Errorf("geoproxy %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
}
