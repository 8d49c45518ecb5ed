package verify

import (
	"strings"
	"testing"
)

// wordingPairs are pairs on both sides of the exact-wording rule.
var wordingPairs = [][2]string{
	{"How do I reset my password?", "how do i reset my password"},
	{"What is AI?", "WHAT IS AI"},
	{"hello", "HELLO!!!"},
	{"  Why is ISRO very successful?  ", "\"Why is ISRO very successful?\""},
	{"What  is  AI?", "What is AI ?\n"},
	{"\"quoted\" (text)", "quoted text"},
	{"C++ or C#?", "c++ or c#"},
	{"C++ or C#?", "c or c"},
	{"-5 degrees", "5 degrees"},
	{"don't stop", "dont stop"},
	{"Node.js", "node js"},
	{"a ... b", "a b"},
	{"ſtraße", "STRASSE"},
	{"Straße", "strasse"},
	{"Kelvin K", "kelvin k"},
	{"Kelvin \u212a", "KELVIN k"},
	{"ΟΔΟΣ", "οδος"},
	{"ΟΔΟΣ", "οδοσ"},
	{"\xff", "\xfe"},
	{"\xff", "\ufffd"},
	{"如何重置我的密码？", "如何重置我的密码"},
	{"如何重置我的密码", "今天北京的天气怎么样"},
	{"one two", "one  two three"},
	{"one two", "onetwo"},
	{"", "?!"},
	{"", "a"},
	{"What is AI?", "What is AI used for?"},
}

// TestWordingKeyIsSameWording: two texts have the same wording key exactly
// when the verifier's rule takes them for the same prompt.
func TestWordingKeyIsSameWording(t *testing.T) {
	for _, p := range wordingPairs {
		same := WordingKey(p[0]) == WordingKey(p[1])
		if same != sameWording(p[0], p[1]) {
			t.Errorf("%q, %q: same key %v (%q, %q), sameWording %v", p[0], p[1], same,
				WordingKey(p[0]), WordingKey(p[1]), sameWording(p[0], p[1]))
		}
	}
	v := New()
	if f := v.Extract("What is AI?", "WHAT IS AI", 0.91); f.Cosine != 1 {
		t.Errorf("the verifier reads same-wording cosine 0.91 as %v, want 1", f.Cosine)
	}
}

func TestAppendWordingKeyDoesNotAllocate(t *testing.T) {
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() {
		buf = AppendWordingKey(buf[:0], "  What is the Kelvin scale (\u212a)?!  ")
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
	if got := string(AppendWordingKey([]byte("x:"), "Hi,  THERE!")); got != "x:HI THERE" {
		t.Errorf("appended %q", got)
	}
}

func FuzzWordingKey(f *testing.F) {
	for _, p := range wordingPairs {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, y := range []string{b, strings.ToUpper(a), strings.ToLower(a), " " + a + "?!", strings.ReplaceAll(a, " ", "  ")} {
			if same := WordingKey(a) == WordingKey(y); same != sameWording(a, y) {
				t.Errorf("%q, %q: same key %v, sameWording %v", a, y, same, !same)
			}
		}
	})
}
