package embed_test

import (
	"context"
	"testing"

	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/lexical"
	"github.com/edgecache/edgecache/embed/zh"
)

// The router sends each text to the member that represents it best:
// English to the first member, Chinese (and Chinese with English terms) to
// the Chinese model; a text neither represents has low coverage.
func TestRouter(t *testing.T) {
	z, err := zh.New()
	if err != nil {
		t.Fatal(err)
	}
	r, err := embed.NewRouter(lexical.New(512), z)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		text, space string
		covered     bool
	}{
		{"How do I reset my password?", "lexical-v1", true},
		{"如何重置我的密码？", z.Name(), true},
		{"如何在Python中读取CSV文件", z.Name(), true},
		{"こんにちは、げんきですか", "", false},
	} {
		space, cov := r.Space(c.text)
		if c.covered != (cov >= embed.MinCoverage) || c.covered && space != c.space {
			t.Errorf("Space(%q) = %s, %.2f; want %s, covered %v", c.text, space, cov, c.space, c.covered)
		}
	}
	texts := []string{"How do I reset my password?", "如何重置我的密码？"}
	vs, err := r.Embed(context.Background(), texts)
	if err != nil || len(vs) != 2 {
		t.Fatalf("Embed: %v, %d vectors", err, len(vs))
	}
	want, _ := z.Embed(context.Background(), texts[1:])
	if embed.Dot(vs[1], want[0]) < 0.9999 {
		t.Errorf("the Chinese text was not embedded by the Chinese model")
	}
	if _, err := embed.NewRouter(lexical.New(0), z); err == nil {
		t.Errorf("members of different dimensions were accepted")
	}
	// Wrappers pass the choice through.
	m, err := embed.NewMemo(r, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if s, _ := embed.SpaceOf(m, texts[1]); s != z.Name() {
		t.Errorf("SpaceOf(Memo(router)) = %s", s)
	}
}
