package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// repoModelDir is models/use-lite at the repository root (make model puts
// it there; make test runs make model first).
func repoModelDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("EDGECACHE_MODEL_DIR"); d != "" {
		return d
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := wd; filepath.Dir(d) != d; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "models", "use-lite")
		}
	}
	t.Fatalf("no go.mod above %s", wd)
	return ""
}

// zhEnv is edgecache with the real local models (USE-lite for English, the
// built-in Chinese model) in front of llmsim, on a semantic chat route at
// its defaults (threshold and degraded floor).
type zhEnv struct {
	data, admin string
	sim         *llmsim.Running
}

func startZhEnv(t *testing.T) *zhEnv {
	t.Helper()
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	dir := repoModelDir(t)
	if _, err := os.Stat(filepath.Join(dir, "model.json")); err != nil {
		t.Fatalf("the USE-lite model is missing from %s (run make model): %v", dir, err)
	}
	sim := startOutageSim(t, llmsim.Config{})
	cfg := fmt.Sprintf(`# %s
semantic: {embedder: local, model_dir: %q, index: embedded}
routes:
  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic}}
`, t.Name(), dir)
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	data, admin := startEdgecache(t, sim.URL(), "--config", path)
	return &zhEnv{data: data, admin: admin, sim: sim}
}

type zhAnswer struct {
	status              int
	cacheStatus, degr   string
	content, similarity string
}

func (z *zhEnv) ask(t *testing.T, prompt string) zhAnswer {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "sim-1",
		"messages": []map[string]string{{"role": "user", "content": prompt}}})
	req, _ := http.NewRequest(http.MethodPost, z.data+"/v1/chat/completions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-zh-test")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %q: %v", prompt, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := zhAnswer{status: resp.StatusCode, cacheStatus: resp.Header.Get("Cache-Status"),
		degr: resp.Header.Get("X-Edgecache-Degraded"), similarity: resp.Header.Get("X-Edgecache-Similarity")}
	var c struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(raw, &c) == nil && len(c.Choices) > 0 {
		a.content = c.Choices[0].Message.Content
	}
	return a
}

// answersTo reports whether content is llmsim's answer to prompt.
func answersTo(content, prompt string) bool {
	return strings.HasPrefix(content, simMarker(prompt)+" ")
}

// TestSemanticChineseUnrelatedNeverMatch: USE-lite's vocabulary holds no
// Chinese character, so before the Chinese model and the coverage gate
// every pure-Chinese prompt embedded alike (cosine 1.0000) and, at a low
// degraded floor, "今天北京的天气怎么样？" was answered with the stored answer
// to "如何重置我的密码？". Unrelated Chinese prompts must miss in normal
// mode, and during an upstream outage get an honest busy answer, never
// another question's answer; a Chinese paraphrase that differs only in
// punctuation still hits (the tier serves Chinese).
func TestSemanticChineseUnrelatedNeverMatch(t *testing.T) {
	z := startZhEnv(t)
	stored := []string{"如何重置我的密码？", "花呗怎么开通？", "北京到上海的高铁票多少钱", "怎样提高英语口语水平"}
	for _, p := range stored {
		if a := z.ask(t, p); a.status != http.StatusOK || !answersTo(a.content, p) {
			t.Fatalf("storing %q: status %d, %q", p, a.status, a.content)
		}
	}
	waitUntil(t, func() bool { // indexing is asynchronous
		a := z.ask(t, "如何重置我的密码")
		return strings.Contains(a.cacheStatus, "detail=semantic")
	})
	unrelated := []string{"今天北京的天气怎么样？", "花呗怎么关闭？", "上海到北京的高铁票多少钱", "怎样降低英语口语水平",
		"推荐一本好看的小说", "我的信用卡被冻结了怎么办"}
	for _, p := range unrelated {
		a := z.ask(t, p)
		if strings.Contains(a.cacheStatus, "hit") || !answersTo(a.content, p) {
			t.Errorf("normal mode: %q got %q (Cache-Status %q, similarity %s): another question's answer",
				p, a.content, a.cacheStatus, a.similarity)
		}
	}
	z.sim.Server.SetFault(llmsim.Fault{Status: http.StatusServiceUnavailable, Probability: 1})
	for _, p := range []string{"今天上海的天气怎么样？", "花呗怎么取消？", "推荐一部好看的电影", "信用卡额度怎么提高"} {
		a := z.ask(t, p)
		if a.status == http.StatusOK || a.degr == "semantic-nearest" {
			t.Errorf("upstream down: %q got %d %q (X-Edgecache-Degraded %q, similarity %s), want an honest busy answer",
				p, a.status, a.content, a.degr, a.similarity)
		}
	}
}

// TestSemanticCoverageGate: a prompt the embedders do not represent (here
// Japanese kana and emoji, which neither USE-lite nor the Chinese model
// knows) is exact-only: never a semantic hit, counted in
// edgecache_semantic_skipped_total{reason="coverage"}.
func TestSemanticCoverageGate(t *testing.T) {
	z := startZhEnv(t)
	for _, p := range []string{"こんにちは、げんきですか", "😀😀😀"} {
		if a := z.ask(t, p); a.status != http.StatusOK || !answersTo(a.content, p) {
			t.Fatalf("storing %q: status %d", p, a.status)
		}
	}
	for _, p := range []string{"さようなら、またあした", "🎉🎉"} {
		if a := z.ask(t, p); strings.Contains(a.cacheStatus, "hit") || !answersTo(a.content, p) {
			t.Errorf("%q got %q (Cache-Status %q): an uncovered prompt was matched", p, a.content, a.cacheStatus)
		}
	}
	_, metrics := get(t, z.admin+"/metrics", "")
	if !strings.Contains(string(metrics), `edgecache_semantic_skipped_total{reason="coverage",route="chat"}`) {
		t.Errorf("/metrics has no edgecache_semantic_skipped_total{reason=\"coverage\",route=\"chat\"}")
	}
}
