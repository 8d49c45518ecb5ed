package templates_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/edgecache/edgecache/templates"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

const operatorDir = "testdata/operator"

func load(t *testing.T, dir string) *templates.Set {
	t.Helper()
	s, err := templates.Load(dir)
	if err != nil {
		t.Fatalf("Load(%q): %v", dir, err)
	}
	return s
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func describe(ts []templates.Template) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "%s route=%s intent=%s lang=%s keywords=%q min=%d max_chars=%d examples=%d source=%s\n\t%s\n",
			t.ID, t.Route, t.Intent, t.Lang, t.Keywords, t.MinKeywords, t.MaxChars, len(t.Examples), t.Source, t.Text)
	}
	return b.String()
}

func TestBuiltins(t *testing.T) {
	s := load(t, "")
	if s.Dir() != "" {
		t.Errorf("Dir = %q", s.Dir())
	}
	golden(t, "builtins.golden", describe(s.Templates()))
	for _, lang := range []string{"en", "zh", "ja", "ko"} {
		if got := s.Busy("chat", lang, 3*time.Second, ""); !strings.Contains(got, "3") {
			t.Errorf("built-in busy %s = %q, want the retry time", lang, got)
		}
	}
	if m, ok := s.Match("chat", "zh", "你好"); !ok || m.ID != "builtin-greeting-zh" {
		t.Errorf("Match(你好) = %+v, %v", m, ok)
	}
}

func TestOperatorOverrides(t *testing.T) {
	s := load(t, operatorDir)
	if s.Dir() != operatorDir {
		t.Errorf("Dir = %q", s.Dir())
	}
	golden(t, "operator.golden", describe(s.Templates()))
	if got := s.RouteLang("support-cn"); got != "zh" {
		t.Errorf("RouteLang(support-cn) = %q, want zh (normalised from zh-CN)", got)
	}
	// Replaced built-in template.
	if m, ok := s.Match("chat", "en", "thank you!"); !ok || m.Text != "Thanks to you! (automatic reply)" {
		t.Errorf("Match(thank you) = %+v, %v; want the operator's text", m, ok)
	}
	// Disabled built-in template.
	if m, ok := s.Match("chat", "zh", "再见"); ok {
		t.Errorf("Match(再见) = %s, want no match: builtin-goodbye-zh is disabled", m.ID)
	}
	// Untouched built-in template.
	if m, ok := s.Match("chat", "zh", "谢谢"); !ok || m.ID != "builtin-thanks-zh" {
		t.Errorf("Match(谢谢) = %+v, %v", m, ok)
	}
	// Replaced built-in busy message; the other languages stay.
	if got := s.Busy("chat", "en", time.Second, ""); got != "Operator busy: retry in 1s." {
		t.Errorf("Busy en = %q", got)
	}
	if got := s.Busy("chat", "zh", time.Second, ""); !strings.HasPrefix(got, "服务当前繁忙") {
		t.Errorf("Busy zh = %q, want the built-in", got)
	}
}

func TestMatch(t *testing.T) {
	s := load(t, operatorDir)
	tests := []struct {
		name, route, lang, text string
		want                    string // template ID, "" for no match
		hits                    string
	}{
		{"keywords en", "chat", "en", "I forgot my password", "password-reset-en", "password forgot*"},
		{"case and punctuation", "chat", "en", "I FORGOTTEN my PASSWORD!!", "password-reset-en", "password forgot*"},
		{"whole words only", "chat", "en", "passwords are hard", "", ""},
		{"not inside a word", "chat", "en", "hithere", "", ""},
		{"keywords zh substring", "chat", "zh", "我忘记密码了怎么办", "password-reset-zh", "密码 忘记"},
		{"lang tag normalised", "chat", "zh-Hans-CN", "重置密码", "password-reset-zh", "密码 重置"},
		{"CJK neighbours are boundaries", "chat", "en", "如何reset密码", "password-reset-en", "reset"},
		{"full-width folded", "chat", "en", "ＰＡＳＳＷＯＲＤ please", "password-reset-en", "password"},
		{"multi-word keyword", "support", "en", "can I get my money back?", "support-refund-en", "money back"},
		{"prefix keyword", "support", "en", "why was I charged twice", "support-refund-en", "charge*"},
		{"exact route beats any", "support", "en", "reset password please", "support-password-en", "password reset"},
		{"min_keywords falls back to any route", "support", "en", "forgot password", "password-reset-en", "password forgot*"},
		{"other routes do not see route templates", "chat", "en", "refund please", "", ""},
		{"route default lang first", "support-cn", "", "怎么重置密码", "password-reset-zh", "密码 重置"},
		{"route default lang then en", "support-cn", "", "forgot password", "password-reset-en", "password forgot*"},
		{"requested lang before route default", "support-cn", "en", "forgot password 密码", "password-reset-en", "password forgot*"},
		{"route template in route lang", "support-cn", "", "快递什么时候到", "shipping-zh", "快递"},
		{"unknown lang falls back to en", "chat", "fr", "forgot password", "password-reset-en", "password forgot*"},
		{"ja route template", "support", "ja", "営業時間を教えてください", "opening-hours-ja", "営業時間"},
		{"ja without ja match falls back to en", "support", "ja", "refund", "support-refund-en", "refund"},
		{"short greeting", "chat", "en", "Hi!", "builtin-greeting-en", "hi"},
		{"greeting too long for the template", "chat", "en", "hi, can you explain in detail how transformers and attention work?", "", ""},
		{"no keywords", "chat", "en", "what is the weather like", "", ""},
		{"empty text", "chat", "en", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := s.Match(tt.route, tt.lang, tt.text)
			if tt.want == "" {
				if ok {
					t.Fatalf("Match(%q, %q, %q) = %s (hits %q), want no match", tt.route, tt.lang, tt.text, m.ID, m.Hits)
				}
				return
			}
			if !ok || m.ID != tt.want {
				t.Fatalf("Match(%q, %q, %q) = %q (ok %v), want %q", tt.route, tt.lang, tt.text, m.ID, ok, tt.want)
			}
			if got := strings.Join(m.Hits, " "); got != tt.hits {
				t.Errorf("hits = %q, want %q", got, tt.hits)
			}
			if m.Text == "" || m.Lang == "" {
				t.Errorf("match without text or lang: %+v", m)
			}
		})
	}
}

func TestMatchCatchAll(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", `
templates:
  - id: support-any
    route: support
    lang: en
    text: "Our assistant is unavailable; see https://example.com/faq meanwhile."
  - id: support-refund
    route: support
    lang: en
    keywords: [refund]
    text: "Refunds take 5 days."
`)
	write(t, dir, "b.yaml", `
templates:
  - id: a-broad
    route: support
    lang: en
    keywords: [invoice, bill, receipt, payment]
    text: "Billing help."
  - id: b-narrow
    route: support
    lang: en
    keywords: [invoice, vat]
    text: "VAT invoices."
`)
	s := load(t, dir)
	if m, ok := s.Match("support", "en", "invoice please"); !ok || m.ID != "b-narrow" {
		t.Errorf("same hits: the template with fewer keywords should win: %+v, %v", m, ok)
	}
	if m, ok := s.Match("support", "en", "invoice and vat"); !ok || m.ID != "b-narrow" {
		t.Errorf("more hits win: %+v, %v", m, ok)
	}
	if m, ok := s.Match("support", "en", "bill and receipt for invoice"); !ok || m.ID != "a-broad" {
		t.Errorf("more hits win: %+v, %v", m, ok)
	}
	if tp, ok := s.ByID("support-refund"); !ok || tp.Text != "Refunds take 5 days." {
		t.Errorf("ByID = %+v, %v", tp, ok)
	}
	if _, ok := s.ByID("nope"); ok {
		t.Error("ByID(nope) found")
	}
	if m, ok := s.Match("support", "en", "anything at all"); !ok || m.ID != "support-any" || len(m.Hits) != 0 {
		t.Errorf("catch-all: %+v, %v", m, ok)
	}
	if m, ok := s.Match("support", "en", "refund"); !ok || m.ID != "support-refund" {
		t.Errorf("keyword beats catch-all: %+v, %v", m, ok)
	}
	if m, ok := s.Match("chat", "en", "anything at all"); ok {
		t.Errorf("catch-all of support matched chat: %s", m.ID)
	}
}

func TestBusy(t *testing.T) {
	op := load(t, operatorDir)
	builtin := load(t, "")
	tests := []struct {
		set         string
		route, lang string
		retryAfter  time.Duration
		reason      string
	}{
		{"builtin", "chat", "en", 0, "upstream_503"},
		{"builtin", "chat", "en", time.Second, ""},
		{"builtin", "chat", "en", 1001 * time.Millisecond, ""},
		{"builtin", "chat", "en-US", 90 * time.Second, "breaker_open"},
		{"builtin", "chat", "zh", 30 * time.Second, ""},
		{"builtin", "chat", "zh-TW", 500 * time.Millisecond, ""},
		{"builtin", "chat", "ja", 2 * time.Second, ""},
		{"builtin", "chat", "ko", 2 * time.Second, ""},
		{"builtin", "chat", "fr", 5 * time.Second, ""},
		{"builtin", "chat", "", 5 * time.Second, "rate_limit_exceeded"},
		{"builtin", "chat", "zh-CN", 61 * time.Second, "rate_limit_exceeded"},
		{"builtin", "chat", "ja", 61 * time.Second, "rate_limit_exceeded"},
		{"operator", "chat", "en", 1500 * time.Millisecond, "timeout"},
		{"operator", "support", "en", 10 * time.Second, "breaker_open"},
		{"operator", "support", "zh", 10 * time.Second, "breaker_open"},
		{"operator", "support-cn", "", 3 * time.Second, "shed"},
		{"operator", "support-cn", "en", 3 * time.Second, "shed"},
		{"operator", "chat", "", 5 * time.Second, "rate_limit_exceeded"},
	}
	var b strings.Builder
	for _, tt := range tests {
		s := builtin
		if tt.set == "operator" {
			s = op
		}
		got := s.Busy(tt.route, tt.lang, tt.retryAfter, tt.reason)
		fmt.Fprintf(&b, "%s route=%s lang=%q retry_after=%v reason=%q\n\t%s\n", tt.set, tt.route, tt.lang, tt.retryAfter, tt.reason, got)
	}
	golden(t, "busy.golden", b.String())

	var nilSet *templates.Set
	if got := nilSet.Busy("chat", "zh", 0, ""); !strings.Contains(got, "retry in 1 seconds") {
		t.Errorf("nil Set Busy = %q", got)
	}
	if _, ok := nilSet.Match("chat", "en", "hello"); ok {
		t.Error("nil Set matched")
	}
}

func TestValidationErrors(t *testing.T) {
	cases, err := os.ReadDir("testdata/invalid")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range cases {
		if !c.IsDir() {
			continue
		}
		n++
		t.Run(c.Name(), func(t *testing.T) {
			dir := filepath.Join("testdata/invalid", c.Name())
			s, err := templates.Load(dir)
			if err == nil {
				t.Fatalf("Load(%s) = %d templates, want an error", dir, len(s.Templates()))
			}
			var ve *templates.ValidationError
			if !errors.As(err, &ve) || len(ve.Problems) == 0 {
				t.Fatalf("error %T is not a *ValidationError with problems: %v", err, err)
			}
			for _, p := range ve.Problems {
				if p.File == "" || p.Line == 0 {
					t.Errorf("problem without a position: %+v", p)
				}
			}
			golden(t, filepath.Join("invalid", c.Name()+".golden"), err.Error()+"\n")
		})
	}
	if n < 8 {
		t.Fatalf("only %d invalid cases found", n)
	}
}

func TestLoadMissingDir(t *testing.T) {
	_, err := templates.Load(filepath.Join(t.TempDir(), "nope"))
	var ve *templates.ValidationError
	if err == nil || errors.As(err, &ve) || !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing dir) = %v, want an ErrNotExist I/O error", err)
	}
}

func TestLoadFileTooLarge(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "big.yaml", "# "+strings.Repeat("x", templates.MaxFileBytes)+"\n")
	_, err := templates.Load(dir)
	if err == nil || !strings.Contains(err.Error(), "big.yaml: file is") {
		t.Fatalf("Load = %v, want a file size problem", err)
	}
}

func TestNormalizeLang(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for not ok
	}{
		{"en", "en"}, {"EN-us", "en"}, {"zh-CN", "zh"}, {"zh_TW", "zh"}, {"zh-Hant-HK", "zh"},
		{"cmn", "zh"}, {"ja-JP", "ja"}, {"ko", "ko"}, {"iw", "he"}, {" fr ", "fr"},
		{"", ""}, {"und", ""}, {"xx", ""}, {"english", ""}, {"e", ""}, {"zh-", ""},
	}
	for _, tt := range tests {
		got, ok := templates.NormalizeLang(tt.in)
		if got != tt.want || ok != (tt.want != "") {
			t.Errorf("NormalizeLang(%q) = %q, %v; want %q", tt.in, got, ok, tt.want)
		}
	}
}

func TestAcceptLanguage(t *testing.T) {
	tests := map[string]string{
		"zh-CN,zh;q=0.9,en;q=0.8": "zh",
		"en-US,en;q=0.5":          "en",
		"fr;q=0.2, ja;q=0.9":      "ja",
		"xx, de":                  "de",
		"*":                       "",
		"":                        "",
		"en;q=0":                  "",
	}
	for in, want := range tests {
		if got := templates.AcceptLanguage(in); got != want {
			t.Errorf("AcceptLanguage(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestDetectLang(t *testing.T) {
	tests := []struct{ text, want string }{
		{"How do I reset my password?", "en"},
		{"我忘记密码了怎么办", "zh"},
		{"用 Python 写一个 HTTP 服务", "zh"},
		{"如何 reset my password", "en"},
		{"What does 你好 mean?", "en"},
		{"パスワードを忘れました", "ja"},
		{"東京の天気はどうですか", "ja"},
		{"비밀번호를 잊어버렸어요", "ko"},
		{"Привет, как дела?", "en"},
		{"", "en"},
		{"12345 !!!", "en"},
	}
	for _, tt := range tests {
		if got := templates.DetectLang(tt.text); got != tt.want {
			t.Errorf("DetectLang(%q) = %q, want %q", tt.text, got, tt.want)
		}
	}
	// Only the beginning of a long text is read.
	long := strings.Repeat("密码", 3000) + strings.Repeat(" word", 10000)
	if got := templates.DetectLang(long); got != "zh" {
		t.Errorf("DetectLang(long) = %q, want zh", got)
	}
}

// bagEmbedder is a deterministic Embedder for tests: words (and CJK
// characters) hashed into 64 dimensions, counted.
type bagEmbedder struct {
	calls atomic.Int64
	fail  error
}

func (e *bagEmbedder) Name() string { return "bag-v1" }

func (e *bagEmbedder) Embed(_ context.Context, texts []string) ([][]float32, error) {
	e.calls.Add(1)
	if e.fail != nil {
		return nil, e.fail
	}
	out := make([][]float32, len(texts))
	for i, text := range texts {
		v := make([]float32, 64)
		for _, w := range strings.FieldsFunc(strings.ToLower(text), func(r rune) bool {
			return r == ' ' || r == ',' || r == '?' || r == '，' || r == '.'
		}) {
			for _, part := range splitCJK(w) {
				h := fnv.New32a()
				h.Write([]byte(part))
				v[h.Sum32()%64]++
			}
		}
		out[i] = v
	}
	return out, nil
}

func splitCJK(w string) []string {
	if len(w) == len([]rune(w)) {
		return []string{w}
	}
	var out []string
	for _, r := range w {
		out = append(out, string(r))
	}
	return out
}

func TestMatchSemantic(t *testing.T) {
	s := load(t, operatorDir)
	e := &bagEmbedder{}
	ctx := t.Context()
	m, ok, err := s.MatchSemantic(ctx, e, "chat", "en", "lost my password, cannot log in", 0.6)
	if err != nil || !ok || m.ID != "password-reset-en" {
		t.Fatalf("MatchSemantic = %+v, %v, %v", m, ok, err)
	}
	if m.Score < 0.6 || m.Score > 1.0001 {
		t.Errorf("score = %v", m.Score)
	}
	m, ok, err = s.MatchSemantic(ctx, e, "support-cn", "", "忘记密码，无法登录", 0.6)
	if err != nil || !ok || m.ID != "password-reset-zh" {
		t.Fatalf("MatchSemantic zh = %+v, %v, %v", m, ok, err)
	}
	if _, ok, err := s.MatchSemantic(ctx, e, "chat", "en", "what is the weather in Paris", 0.6); ok || err != nil {
		t.Fatalf("unrelated text matched: %v, %v", ok, err)
	}
	// Examples are embedded once per Set and embedder: 1 + one per query.
	if got := e.calls.Load(); got != 4 {
		t.Errorf("Embed calls = %d, want 4", got)
	}

	failing := &bagEmbedder{fail: errors.New("model down")}
	failing2 := &failingName{failing}
	if _, ok, err := s.MatchSemantic(ctx, failing2, "chat", "en", "lost password", 0.6); ok || err == nil {
		t.Fatalf("failing embedder: ok=%v err=%v, want an error", ok, err)
	}
}

// failingName gives the failing embedder its own name, so the example
// vectors of bag-v1 are not reused.
type failingName struct{ *bagEmbedder }

func (failingName) Name() string { return "failing" }

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond every few milliseconds until it holds or 10s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
}

func answer(t *testing.T, text string) string {
	t.Helper()
	return fmt.Sprintf(`
templates:
  - id: faq
    lang: en
    keywords: [faq]
    text: %q
`, text)
}

func TestWatcherReloads(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", answer(t, "version one"))
	w, err := templates.NewWatcher(dir, 10*time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	text := func() string {
		m, _ := w.Current().Match("chat", "en", "faq")
		return m.Text
	}
	if got := text(); got != "version one" {
		t.Fatalf("initial text = %q", got)
	}

	write(t, dir, "a.yaml", answer(t, "version two, longer"))
	eventually(t, "the new text", func() bool { return text() == "version two, longer" })
	if w.Err() != nil || w.Stats().Reloads == 0 {
		t.Errorf("Err = %v, Stats = %+v", w.Err(), w.Stats())
	}

	// A new file is picked up too.
	write(t, dir, "b.yaml", "busy:\n  - lang: en\n    text: \"Busy! {{.RetryAfter}}\"\n")
	eventually(t, "the new busy message", func() bool { return w.Current().Busy("chat", "en", time.Second, "") == "Busy! 1" })

	// A removed file disappears.
	if err := os.Remove(filepath.Join(dir, "b.yaml")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the built-in busy message", func() bool {
		return strings.HasPrefix(w.Current().Busy("chat", "en", time.Second, ""), "The service is busy")
	})
}

func TestWatcherKeepsPreviousSetOnBrokenFile(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", answer(t, "good"))
	w, err := templates.NewWatcher(dir, 10*time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := w.Current()

	write(t, dir, "a.yaml", "templates:\n  - id: faq\n    lang: xx\n    text: broken\n")
	eventually(t, "the reload error", func() bool { return w.Err() != nil })
	if !strings.Contains(w.Err().Error(), `unknown language "xx"`) {
		t.Errorf("Err = %v", w.Err())
	}
	if w.Current() != before {
		t.Fatal("the Set changed after a failed reload")
	}
	if m, ok := w.Current().Match("chat", "en", "faq"); !ok || m.Text != "good" {
		t.Errorf("Match after a failed reload = %+v, %v", m, ok)
	}
	fails := w.Stats().Fails

	// A forced reload reports the same error and keeps the Set.
	if err := w.Reload(); err == nil || w.Current() != before {
		t.Errorf("Reload = %v; Set changed: %v", err, w.Current() != before)
	}

	// The broken state is not retried at every poll: it is logged once.
	time.Sleep(50 * time.Millisecond) // several poll intervals, to prove nothing happens
	if got := w.Stats().Fails; got != fails+1 {
		t.Errorf("Fails = %d after the forced reload, want %d (no retries of an unchanged broken file)", got, fails+1)
	}

	write(t, dir, "a.yaml", answer(t, "fixed again"))
	eventually(t, "the fixed text", func() bool {
		m, _ := w.Current().Match("chat", "en", "faq")
		return m.Text == "fixed again"
	})
	if w.Err() != nil {
		t.Errorf("Err after the fix = %v", w.Err())
	}
}

func TestWatcherFirstLoadMustSucceed(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "a.yaml", "templates: {}\n")
	if w, err := templates.NewWatcher(dir, time.Millisecond, quiet); err == nil {
		w.Close()
		t.Fatal("NewWatcher on a broken dir succeeded")
	}
}

func TestWatcherBuiltinsOnly(t *testing.T) {
	w, err := templates.NewWatcher("", 0, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if w.Current() == nil || w.Current().Dir() != "" {
		t.Fatal("no built-in Set")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	_ = w.Close() // twice is fine
	if w.Reload() != nil {
		t.Fatal("Reload of built-ins failed")
	}
}

func TestRetryRounding(t *testing.T) {
	s := load(t, "")
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{-time.Second, "1 second;"},
		{0, "1 second;"},
		{time.Nanosecond, "1 second;"},
		{time.Second, "1 second;"},
		{time.Second + time.Nanosecond, "2 seconds;"},
		{59*time.Second + 100*time.Millisecond, "60 seconds;"},
		{math.MaxInt64, "2147483647 seconds;"},
	} {
		if got := s.Busy("chat", "en", tt.d, ""); !strings.Contains(got, tt.want) {
			t.Errorf("Busy(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestWatcherDirRemoved(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "templates")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "a.yaml", answer(t, "still here"))
	w, err := templates.NewWatcher(dir, 10*time.Millisecond, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := w.Current()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the reload error", func() bool { return w.Err() != nil })
	if !errors.Is(w.Err(), os.ErrNotExist) || w.Current() != before {
		t.Errorf("Err = %v; Set kept: %v", w.Err(), w.Current() == before)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "a.yaml", answer(t, "back"))
	eventually(t, "the restored templates", func() bool {
		m, _ := w.Current().Match("chat", "en", "faq")
		return m.Text == "back"
	})
}
