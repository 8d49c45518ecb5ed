package verify

import (
	"fmt"
	"testing"
)

func TestDebugFeatures(t *testing.T) {
	v := New()
	for _, p := range [][2]string{
		{"How do I learn Python?", "How do I learn Java?"},
		{"What is 15 % of 80?", "What is 15 % of 90?"},
		{"How do I translate this to French?", "How do I translate this to German?"},
		{"Why can't I sleep at night?", "Why can I sleep at night?"},
		{"How do I reset my password?", "password reset — how?"},
		{"How does photosynthesis work?", "Why does photosynthesis work?"},
		{"What are the studies saying about learning?", "What do studies say about learned stuff?"},
	} {
		s := v.get()
		f := s.features(p[0], p[1], 0.9)
		var words []string
		for _, tk := range s.q.toks {
			words = append(words, fmt.Sprintf("%s/%d/%v", s.stem(tk), tk.kind, tk.entity))
		}
		t.Logf("%q vs %q\n  %v\n  %+v", p[0], p[1], words, f)
		v.put(s)
	}
}
