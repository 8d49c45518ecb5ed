package templates

import (
	"errors"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// The merged set must keep an English busy message for every route; only
// broken built-ins can lose it, so this is checked with a fake built-in FS.
func TestLoadRequiresEnglishBusy(t *testing.T) {
	builtin := fstest.MapFS{
		"b/defaults.yaml": {Data: []byte("busy:\n  - lang: zh\n    text: \"请在 {{.RetryAfter}} 秒后重试。\"\n")},
	}
	_, err := load(builtin, "b", "")
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("load = %v, want a *ValidationError", err)
	}
	want := `templates: busy: no busy message for lang "en" at route "*" without a reason`
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %q, want prefix %q", err, want)
	}

	// An operator file can provide it.
	dir := t.TempDir()
	if err := writeFile(dir+"/en.yaml", "busy:\n  - lang: en\n    text: \"Retry in {{.RetryAfter}}s.\"\n"); err != nil {
		t.Fatal(err)
	}
	s, err := load(builtin, "b", dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Busy("x", "fr", 0, ""); got != "Retry in 1s." {
		t.Errorf("Busy = %q", got)
	}
}

func TestBusyKeys(t *testing.T) {
	got := busyKeys("chat", "en", "shed")
	want := []busyKey{{"chat", "en", "shed"}, {"chat", "en", ""}, {"*", "en", "shed"}, {"*", "en", ""}}
	if !equal(got, want) {
		t.Errorf("busyKeys = %v, want %v", got, want)
	}
	got = busyKeys("*", "zh", "")
	want = []busyKey{{"*", "zh", ""}}
	if !equal(got, want) {
		t.Errorf("busyKeys(*) = %v, want %v", got, want)
	}
}

func equal(a, b []busyKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o644)
}
