package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/semantic/verify"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

// The semantic-nearest rung, end to end with real parts: edgecache
// in-process, llmsim as the model and as the remote embedder (its
// EmbeddingFold gives case variants one vector), the embedded index, the
// built-in verifier and the official SDKs, unmodified. During a 503 storm
// (POST /_sim/faults), a query whose nearest stored question the verifier
// scores under the route's threshold gets a 200 whose body, which is all
// an SDK shows, says that the service is busy and which question the
// answer belongs to, in the query's language, streamed or not.

// nearestSDKCase is a stored question and a query that llmsim embeds to
// the same vector (they differ in letter case) but that are not the same
// text.
type nearestSDKCase struct {
	lang, stored, query, opening string
}

var nearestSDKCases = []nearestSDKCase{
	{"en", "How do I reset my password?", "how do I reset my PASSWORD?",
		"The service is busy right now, so this is an earlier answer to a similar question: “How do I reset my password?”."},
	{"zh", "如何重置我的Gmail密码？", "如何重置我的GMAIL密码？",
		"服务繁忙，以下是对一个相近的早先问题“如何重置我的Gmail密码？”的回答"},
}

const nearestEmbedModel = "sim-embed-1"

// nearestConfig returns an edgecache configuration whose chat route sets
// its threshold over what the verifier scores the cases' pairs, so they
// are never normal hits, and the verifier's scores of the pairs. The
// degraded floor is the default (verify.DegradedFloor) unless the built-in
// calibration scores a pair under it.
func nearestConfig(t *testing.T, embedURL string) (string, map[string]float32) {
	t.Helper()
	v := verify.NewFor("remote:" + nearestEmbedModel)
	scores := map[string]float32{}
	lo, hi := float32(1), float32(0)
	for _, c := range nearestSDKCases {
		s, _ := v.Score(c.query, c.stored, 1)
		scores[c.lang] = s
		lo, hi = min(lo, s), max(hi, s)
	}
	if hi >= 0.998 {
		t.Skipf("the verifier scores the case-variant pairs %v: no threshold under 1 keeps them from being normal hits", scores)
	}
	floor := ""
	if lo < verify.DegradedFloor {
		floor = fmt.Sprintf(", degraded_floor: %.4f", lo-0.01)
		t.Logf("the verifier scores a pair %v, under verify.DegradedFloor %v: the route's floor is set under it", lo, verify.DegradedFloor)
	}
	threshold := (float64(hi) + 1) / 2
	return fmt.Sprintf(`# %s
semantic:
  embedder: remote
  remote: {url: %q, model: %q}
  index: embedded
routes:
  - {name: chat, path: /v1/chat/completions, cache: {mode: semantic, semantic: {threshold: %.4f}%s}}
`, t.Name(), embedURL, nearestEmbedModel, threshold, floor), scores
}

func TestSDKNearestRungDisclosesTheMatchedQuestion(t *testing.T) {
	t.Setenv("EDGECACHE_QDRANT_ADDR", "")
	sim := startOutageSim(t, llmsim.Config{AnswerTokens: sdkAnswerWords, EmbeddingDims: sdkEmbeddingDims, EmbeddingFold: true})
	cfg, scores := nearestConfig(t, sim.URL()+"/v1")
	path := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	data, admin := startEdgecache(t, sim.URL(), "--config", path)
	e := &sdkEnv{sim: sim, data: data, client: newGoSDKClient(data + "/v1"), ctx: t.Context()}

	answers := map[string]string{}
	for _, c := range nearestSDKCases {
		cc, resp := e.chatOnce(t, c.lang+" seed", c.stored)
		wantMiss(t, c.lang+" seed", resp, true)
		answers[c.lang] = cc.Choices[0].Message.Content
	}
	postJSON(t, sim.URL()+"/_sim/faults", `{"status":503,"paths":["/v1/chat/completions"]}`)
	for _, c := range nearestSDKCases {
		waitNearest(t, data, c.query) // the stored question is indexed in the background
	}

	texts := map[string][2]string{} // lang → JSON text, streamed text
	for _, c := range nearestSDKCases {
		cc, resp := e.chatOnce(t, c.lang+" JSON", c.query)
		if got := resp.Header.Get("X-Edgecache-Degraded"); got != "semantic-nearest" {
			t.Errorf("%s JSON: X-Edgecache-Degraded %q, want semantic-nearest", c.lang, got)
		}
		if got, want := resp.Header.Get("X-Edgecache-Matched-Question-Hash"), questionHash16(c.stored); got != want {
			t.Errorf("%s JSON: X-Edgecache-Matched-Question-Hash %q, want %q", c.lang, got, want)
		}
		s := e.chatStream(t, c.lang+" SSE", c.query, false)
		if s.err != nil || len(s.acc.Choices) != 1 || s.acc.Choices[0].FinishReason != "stop" {
			t.Errorf("%s SSE: err %v, %d choices", c.lang, s.err, len(s.acc.Choices))
		}
		texts[c.lang] = [2]string{cc.Choices[0].Message.Content, s.text()}
	}
	if node, dir, ok := nodeSDKIfInstalled(t); ok {
		for lang, got := range nodeNearest(t, node, dir, data) {
			texts[lang+" (Node SDK)"] = got
		}
	}
	for _, c := range nearestSDKCases {
		for name, got := range texts {
			if name != c.lang && name != c.lang+" (Node SDK)" {
				continue
			}
			for i, text := range got {
				if !strings.HasPrefix(text, c.opening) || !strings.HasSuffix(text, "\n\n"+answers[c.lang]) {
					t.Errorf("%s, %s: the SDK shows %q\nwant it to open with %q and end with the stored answer %q",
						name, [2]string{"JSON", "SSE"}[i], text, c.opening, answers[c.lang])
				}
			}
		}
	}
	checkNearestJournal(t, admin, scores)
}

// waitNearest polls the query (raw HTTP, as the SDKs send it, with their
// API key) until the semantic-nearest rung answers it.
func waitNearest(t *testing.T, data, query string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"model": "gpt-4o-mini", "messages": []map[string]string{
		{"role": "system", "content": "You are terse."}, {"role": "user", "content": query}}})
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, err := http.NewRequest(http.MethodPost, data+"/v1/chat/completions", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+sdkAPIKey) // the SDKs' namespace
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 && resp.Header.Get("X-Edgecache-Degraded") == "semantic-nearest" {
			return
		}
		if resp.StatusCode != 503 || time.Now().After(deadline) {
			t.Fatalf("%q during the storm: %d degraded %q %s, want the semantic-nearest rung", query, resp.StatusCode,
				resp.Header.Get("X-Edgecache-Degraded"), b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNearestJournal checks the journal's semantic-nearest records (from
// the admin API): each has the similarity, the verifier's score, and the
// hash of the stored question it answered, and says it was disclosed.
func checkNearestJournal(t *testing.T, admin string, scores map[string]float32) {
	t.Helper()
	want := map[string]float32{} // matched hash → score
	for _, c := range nearestSDKCases {
		want[questionHash16(c.stored)] = scores[c.lang]
	}
	var got struct {
		Degradations []struct {
			Cache *struct {
				Similarity  float32 `json:"similarity"`
				Score       float32 `json:"score"`
				Disclosed   bool    `json:"disclosed"`
				MatchedHash string  `json:"matched_hash"`
			} `json:"cache"`
		} `json:"degradations"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for { // the journal is written in the background
		resp, err := http.Get(admin + "/admin/degradations?since=1h&rung=semantic-nearest")
		if err != nil {
			t.Fatal(err)
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Degradations) >= 2*len(nearestSDKCases) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got.Degradations) < 2*len(nearestSDKCases) {
		t.Fatalf("%d semantic-nearest journal records, want at least %d", len(got.Degradations), 2*len(nearestSDKCases))
	}
	for _, d := range got.Degradations {
		c := d.Cache
		if c == nil {
			t.Errorf("a semantic-nearest record without its cache fields")
			continue
		}
		score, ok := want[c.MatchedHash]
		if !ok || c.Similarity < 0.99 || math.Abs(float64(c.Score-score)) > 1e-4 || !c.Disclosed {
			t.Errorf("journal record %+v, want similarity ~1, one of the matched hashes and scores %v, disclosed", *c, want)
		}
	}
}

// questionHash16 is the matched question's identifier edgecache reports:
// 16 bytes of the SHA-256 of its text, in hex.
func questionHash16(text string) string {
	sum := sha256.Sum256([]byte(text))
	return hex.EncodeToString(sum[:16])
}

func postJSON(t *testing.T, url, body string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, b)
	}
}

// nodeSDKIfInstalled is nodeSDK when Node.js and npm are on PATH; the Go
// SDK's checks stand alone without them.
func nodeSDKIfInstalled(t *testing.T) (node, dir string, ok bool) {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Log("node is not on PATH: the Node SDK part is skipped")
		return "", "", false
	}
	if _, err := exec.LookPath("npm"); err != nil {
		t.Log("npm is not on PATH: the Node SDK part is skipped")
		return "", "", false
	}
	node, dir = nodeSDK(t)
	return node, dir, true
}

// nodeNearest runs testdata/sdk-node/nearest.mjs: the Node SDK asks each
// case's query, streamed and not, and reports the texts it shows.
func nodeNearest(t *testing.T, node, dir, data string) map[string][2]string {
	t.Helper()
	queries := map[string]string{}
	for _, c := range nearestSDKCases {
		queries[c.lang] = c.query
	}
	q, _ := json.Marshal(queries)
	cmd := exec.CommandContext(t.Context(), node, "nearest.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGECACHE_BASE_URL="+data+"/v1", "EDGECACHE_QUERIES="+string(q))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node nearest.mjs: %v\n%s%s", err, out, stderr.String())
	}
	var got map[string][2]string
	if err := json.Unmarshal(out, &got); err != nil || len(got) != len(queries) {
		t.Fatalf("node nearest.mjs printed %s (%v), want a JSON object with %d languages", out, err, len(queries))
	}
	return got
}
