package llmsim

import (
	"net/http"
	"strings"
	"testing"
)

// TestCanonicalAnswers: a paraphrase listed in Canonical is answered as
// its canonical question (byte for byte, or with its own filler under
// Reword), a hard negative that is not listed gets its own answer, and
// PUT /_sim/config sets and clears the map.
func TestCanonicalAnswers(t *testing.T) {
	const canon, para, hard = "How do I learn Python quickly?", "What is the fastest way to learn Python?", "How do I learn Java quickly?"
	s, ts := newSim(t, Config{})
	content := func(q string) string {
		t.Helper()
		_, b := post(t, ts, "/v1/chat/completions", chatBody(q))
		return decode[chatCompletion](t, b).Choices[0].Message.Content
	}
	before := content(para)
	resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"canonical":{"what is the FASTEST way to learn  Python?":"`+canon+`"}}`)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"canonical"`) {
		t.Fatalf("PUT canonical: %d %s", resp.StatusCode, b)
	}
	want := content(canon)
	if got := content(para); got != want || got == before {
		t.Errorf("paraphrase (listed with other case and spacing) answered %q, want the canonical answer %q", got, want)
	}
	if got := content(hard); got == want || !strings.HasPrefix(got, "sim:"+hash12(hard)) {
		t.Errorf("hard negative answered %q: want its own answer", got)
	}

	if resp, b := do(t, ts, http.MethodPut, "/_sim/config", `{"reword":true}`); resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"reword":true`) {
		t.Fatalf("PUT reword: %d %s", resp.StatusCode, b)
	}
	got := content(para)
	first, _, _ := strings.Cut(got, " ")
	if first != "sim:"+hash12(canon) || got == want {
		t.Errorf("reworded paraphrase answered %q: want the canonical first word sim:%s and other filler than %q", got, hash12(canon), want)
	}
	if content(canon) != want {
		t.Error("Reword changed the canonical question's own answer")
	}

	if resp, _ := do(t, ts, http.MethodPut, "/_sim/config", `{"canonical":{}}`); resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT canonical {}: %d", resp.StatusCode)
	}
	if m, _ := s.Canonical(); len(m) != 0 {
		t.Fatalf("PUT canonical {}: the map is %v", m)
	}
	if content(para) != before {
		t.Error("after clearing the map the paraphrase still gets the canonical answer")
	}
}

// TestCanonicalIsCopied: changing the caller's map after SetCanonical does
// not change the answers (requests read the map without a lock).
func TestCanonicalIsCopied(t *testing.T) {
	m := map[string]string{"b": "a"}
	s := New(Config{})
	if err := s.SetCanonical(m, false); err != nil {
		t.Fatal(err)
	}
	m["c"] = "a"
	if got, _ := s.Canonical(); len(got) != 1 || s.canon.Load().folded["c"] != "" {
		t.Errorf("the server's map changed with the caller's: %v", got)
	}
}
