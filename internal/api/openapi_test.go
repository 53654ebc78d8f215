package api

import (
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
	yaml "go.yaml.in/yaml/v3"
)

type openAPIDoc struct {
	OpenAPI string                    `yaml:"openapi"`
	Paths   map[string]map[string]any `yaml:"paths"`
}

var httpMethods = []string{"get", "put", "post", "delete", "patch", "head", "options"}

func loadOpenAPI(t *testing.T) (openAPIDoc, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "docs", "openapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	return doc, raw
}

// docPath turns a chi pattern into the OpenAPI spelling.
func docPath(pattern string) string {
	if p, ok := strings.CutSuffix(pattern, "/*"); ok {
		return p + "/{path}"
	}
	return pattern
}

// Every route the router serves is documented, and every documented
// operation is served.
func TestOpenAPIMatchesRouter(t *testing.T) {
	doc, raw := loadOpenAPI(t)
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi version %q", doc.OpenAPI)
	}
	s, err := New(Config{}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	err = chi.Walk(s.Handler().(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		served = append(served, strings.ToLower(method)+" "+docPath(route))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for p, item := range doc.Paths {
		for m, op := range item {
			if !slices.Contains(httpMethods, m) {
				continue
			}
			documented = append(documented, m+" "+p)
			if o, ok := op.(map[string]any); !ok || o["responses"] == nil {
				t.Errorf("%s %s: no responses", m, p)
			}
		}
	}
	slices.Sort(served)
	slices.Sort(documented)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not documented: %s", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("documented but not served: %s", d)
		}
	}
	if len(served) < 14 {
		t.Fatalf("walked only %d routes: %v", len(served), served)
	}
	// Every local $ref resolves.
	var tree map[string]any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		_, ref, ok := strings.Cut(line, `$ref: "#/`)
		if !ok {
			continue
		}
		ref, _, _ = strings.Cut(ref, `"`)
		var node any = tree
		for _, part := range strings.Split(ref, "/") {
			m, ok := node.(map[string]any)
			if !ok || m[part] == nil {
				t.Errorf("dangling $ref #/%s", ref)
				break
			}
			node = m[part]
		}
	}
	// Every error code the API can send is in the document's enum.
	for _, code := range []string{CodeInvalidRequest, CodeUnauthorized, CodeForbidden, CodeNotFound, CodeConflict,
		CodePoolExhausted, CodeRateLimited, CodeHostUnavailable, CodePayloadTooLarge, CodeInternal} {
		if !strings.Contains(string(raw), code) {
			t.Errorf("code %s undocumented", code)
		}
	}
}
