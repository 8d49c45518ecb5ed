package local

import (
	"context"
	"testing"

	"github.com/edgecache/edgecache/embed"
)

// FuzzEmbed: no input panics, every input gives a unit vector, and the
// tokenizer never emits more than maxTokens ids or an id outside the table.
// `go test` runs the seeds; fuzz with
// go test ./embed/local/ -run '^$' -fuzz FuzzEmbed -fuzztime 30s.
func FuzzEmbed(f *testing.F) {
	for _, g := range golden {
		if len(g.text) < 200 {
			f.Add(g.text)
		}
	}
	f.Add("\xff\xfe\x00")
	f.Add("\u2581\u2581 \u2581")
	f.Fuzz(func(t *testing.T, text string) {
		_, m := models(t)
		for _, id := range m.tokens(text) {
			if id < 0 || id >= vocabRows {
				t.Fatalf("token id %d", id)
			}
		}
		if n := len(m.tokens(text)); n > maxTokens {
			t.Fatalf("%d tokens", n)
		}
		vs, err := m.Embed(context.Background(), []string{text, text + " and more"})
		if err != nil {
			t.Fatal(err)
		}
		checkUnit(t, "fuzz", vs[0])
		checkUnit(t, "fuzz", vs[1])
		// The other path (float32 or int8): unit vectors within the
		// published tolerance of the int8 path.
		o := m.opts
		o.Int8 = !o.Int8
		qs, err := m.WithOptions(o).Embed(context.Background(), []string{text, text + " and more"})
		if err != nil {
			t.Fatal(err)
		}
		for i := range qs {
			checkUnit(t, "fuzz", qs[i])
			if c := embed.Dot(vs[i], qs[i]); c < int8Tolerance {
				t.Fatalf("%q: cosine int8 vs float32 %v", text, c)
			}
		}
	})
}
