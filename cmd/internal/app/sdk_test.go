package app

// The official OpenAI SDKs, unmodified but for their base URL, get the same
// answers through edgecache on a miss and on the following hit, streamed
// and not. The Go SDK (openai-go) runs in-process; the Node SDK (the openai
// npm package) runs as testdata/sdk-node/sdk.mjs under node.

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

const (
	sdkAnswerWords   = 16 // llmsim.Config.AnswerTokens of these tests
	sdkEmbeddingDims = 64 // llmsim.Config.EmbeddingDims of these tests
	sdkAPIKey        = "sk-edgecache-sdk-test"

	pathChat        = "/v1/chat/completions"
	pathCompletions = "/v1/completions"
	pathEmbeddings  = "/v1/embeddings"
)

// sdkEnv is an llmsim upstream with edgecache in front of it, and an
// openai-go client pointed at edgecache.
type sdkEnv struct {
	sim    *llmsim.Running
	client openai.Client
	data   string          // edgecache's data URL
	ctx    context.Context // bounds every SDK call of the test
}

// sdkTestTimeout bounds the SDK calls of one test, so a hung proxy fails
// the test instead of stalling the run.
const sdkTestTimeout = 2 * time.Minute

func newSDKEnv(t *testing.T) *sdkEnv {
	t.Helper()
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0",
		llmsim.Config{AnswerTokens: sdkAnswerWords, EmbeddingDims: sdkEmbeddingDims})
	if err != nil {
		t.Fatalf("llmsim.Start: %v", err)
	}
	t.Cleanup(func() { _ = sim.Close() }) // runs after edgecache's cleanup
	data, _ := startEdgecache(t, sim.URL())
	ctx, cancel := context.WithTimeout(context.Background(), sdkTestTimeout)
	t.Cleanup(cancel)
	return &sdkEnv{sim: sim, data: data, client: newGoSDKClient(data + "/v1"), ctx: ctx}
}

// newGoSDKClient is the client an application would build, pointed at
// baseURL: the only change edgecache asks for is the base URL (the API key
// is the application's own).
func newGoSDKClient(baseURL string) openai.Client {
	return openai.NewClient(option.WithBaseURL(baseURL), option.WithAPIKey(sdkAPIKey))
}

// upstreamCalls returns how many requests llmsim has received on path.
func (e *sdkEnv) upstreamCalls(path string) int64 { return e.sim.Server.Stats()[path] }

func (e *sdkEnv) wantUpstreamCalls(t *testing.T, path string, want int64, after string) {
	t.Helper()
	if got := e.upstreamCalls(path); got != want {
		t.Errorf("after %s: llmsim received %d requests on %s, want %d", after, got, path, want)
	}
}

// uniquePrompt returns a prompt no other test (or earlier run) sends.
func uniquePrompt(t *testing.T, what string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return what + " for " + t.Name() + " #" + hex.EncodeToString(b)
}

// simMarker is the first word llmsim answers to text: "sim:" and 12 hex
// digits of sha256(text).
func simMarker(text string) string {
	sum := sha256.Sum256([]byte(text))
	return "sim:" + hex.EncodeToString(sum[:6])
}

// checkAnswerText checks that text is a complete llmsim answer to prompt.
func checkAnswerText(t *testing.T, what, text, prompt string) {
	t.Helper()
	if !strings.HasPrefix(text, simMarker(prompt)+" ") {
		t.Errorf("%s: answer %q does not start with %q", what, text, simMarker(prompt)+" ")
	}
	if n := len(strings.Fields(text)); n != sdkAnswerWords {
		t.Errorf("%s: answer %q has %d words, want %d", what, text, n, sdkAnswerWords)
	}
}

func cacheStatus(resp *http.Response) string {
	if resp == nil {
		return "<no response>"
	}
	return resp.Header.Get("Cache-Status")
}

// wantMiss checks that resp is a miss forwarded upstream (and, with stored,
// that edgecache says it stored the answer; a streamed miss cannot say so:
// its headers leave before the answer is complete).
func wantMiss(t *testing.T, what string, resp *http.Response, stored bool) {
	t.Helper()
	cs := cacheStatus(resp)
	if !strings.HasPrefix(cs, "edgecache; fwd=uri-miss") || strings.Contains(cs, "collapsed") {
		t.Errorf("%s: Cache-Status %q, want a miss (edgecache; fwd=uri-miss...)", what, cs)
	}
	if stored && !strings.Contains(cs, "; stored") {
		t.Errorf("%s: Cache-Status %q does not say the answer was stored", what, cs)
	}
}

func wantHit(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	if cs := cacheStatus(resp); !strings.HasPrefix(cs, "edgecache; hit; detail=l1") {
		t.Errorf("%s: Cache-Status %q, want a hit from L1 (edgecache; hit; detail=l1...)", what, cs)
	}
}

func chatParams(prompt string) openai.ChatCompletionNewParams {
	return openai.ChatCompletionNewParams{
		Model:    openai.ChatModelGPT4oMini,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("You are terse."), openai.UserMessage(prompt)},
	}
}

// chatOnce makes a non-streamed chat request and returns the answer's text.
func (e *sdkEnv) chatOnce(t *testing.T, what, prompt string) (*openai.ChatCompletion, *http.Response) {
	t.Helper()
	var resp *http.Response
	cc, err := e.client.Chat.Completions.New(e.ctx, chatParams(prompt), option.WithResponseInto(&resp))
	if err != nil {
		t.Fatalf("%s: Chat.Completions.New: %v", what, err)
	}
	if len(cc.Choices) != 1 {
		t.Fatalf("%s: %d choices, want 1: %s", what, len(cc.Choices), cc.RawJSON())
	}
	return cc, resp
}

// streamedChat is a streamed chat answer as the SDK's accumulator
// assembled it.
type streamedChat struct {
	acc    openai.ChatCompletionAccumulator
	chunks int
	err    error // the stream's Err()
	resp   *http.Response
}

func (s *streamedChat) text() string {
	if len(s.acc.Choices) == 0 {
		return ""
	}
	return s.acc.Choices[0].Message.Content
}

// chatStream makes a streamed chat request and assembles it with the SDK's
// ChatCompletionAccumulator.
func (e *sdkEnv) chatStream(t *testing.T, what, prompt string, includeUsage bool) *streamedChat {
	t.Helper()
	params := chatParams(prompt)
	if includeUsage {
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	}
	out := &streamedChat{}
	stream := e.client.Chat.Completions.NewStreaming(e.ctx, params, option.WithResponseInto(&out.resp))
	defer stream.Close()
	for stream.Next() {
		out.chunks++
		if !out.acc.AddChunk(stream.Current()) {
			t.Errorf("%s: the accumulator refused chunk %d: %s", what, out.chunks, stream.Current().RawJSON())
		}
	}
	out.err = stream.Err()
	return out
}

// checkStreamed checks a streamed chat answer that should be complete. A
// relayed stream (a miss) arrives word by word, as the model sent it; a
// replayed one (a hit) may carry the stored text in fewer chunks.
func checkStreamed(t *testing.T, what string, s *streamedChat, prompt string, wantUsage, relayed bool) {
	t.Helper()
	if s.err != nil {
		t.Fatalf("%s: stream.Err() = %v", what, s.err)
	}
	if ct := s.resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("%s: Content-Type %q, want text/event-stream", what, ct)
	}
	if len(s.acc.Choices) != 1 {
		t.Fatalf("%s: %d choices assembled, want 1", what, len(s.acc.Choices))
	}
	// Relayed: a role chunk, one chunk per word and a finish chunk at
	// least. Replayed: some content and a finish chunk at least.
	if minChunks := map[bool]int{true: sdkAnswerWords + 2, false: 2}[relayed]; s.chunks < minChunks {
		t.Errorf("%s: %d chunks, want at least %d", what, s.chunks, minChunks)
	}
	checkAnswerText(t, what, s.text(), prompt)
	if fr := s.acc.Choices[0].FinishReason; fr != "stop" {
		t.Errorf("%s: finish_reason %q, want stop", what, fr)
	}
	if s.acc.Model != string(openai.ChatModelGPT4oMini) {
		t.Errorf("%s: model %q, want %q", what, s.acc.Model, openai.ChatModelGPT4oMini)
	}
	u := s.acc.Usage
	switch {
	case wantUsage && (u.CompletionTokens != sdkAnswerWords || u.PromptTokens <= 0 || u.TotalTokens != u.PromptTokens+u.CompletionTokens):
		t.Errorf("%s: usage %+v, want %d completion tokens and a consistent total", what, u, sdkAnswerWords)
	case !wantUsage && u.TotalTokens != 0:
		t.Errorf("%s: usage %+v in a stream that did not ask for it", what, u)
	}
}

func TestGoSDKChat(t *testing.T) {
	e := newSDKEnv(t)

	t.Run("non-streamed miss then hit", func(t *testing.T) {
		prompt := uniquePrompt(t, "Name a colour")
		miss, missResp := e.chatOnce(t, "miss", prompt)
		wantMiss(t, "miss", missResp, true)
		checkAnswerText(t, "miss", miss.Choices[0].Message.Content, prompt)
		e.wantUpstreamCalls(t, pathChat, 1, "the miss")

		hit, hitResp := e.chatOnce(t, "hit", prompt)
		wantHit(t, "hit", hitResp)
		e.wantUpstreamCalls(t, pathChat, 1, "the hit")
		if got, want := hit.Choices[0].Message.Content, miss.Choices[0].Message.Content; got != want {
			t.Errorf("hit content %q, miss content %q: want identical", got, want)
		}
		if hit.ID != miss.ID || hit.Model != miss.Model || hit.Choices[0].FinishReason != miss.Choices[0].FinishReason ||
			hit.Usage.TotalTokens != miss.Usage.TotalTokens {
			t.Errorf("hit differs from miss:\nmiss %s\nhit  %s", miss.RawJSON(), hit.RawJSON())
		}
		if miss.Usage.CompletionTokens != sdkAnswerWords {
			t.Errorf("miss usage %+v, want %d completion tokens", miss.Usage, sdkAnswerWords)
		}

		// The stored answer replayed as a stream: the accumulator rebuilds
		// the same text, with usage when asked for and none otherwise.
		for _, usage := range []bool{true, false} {
			s := e.chatStream(t, "streamed hit", prompt, usage)
			wantHit(t, "streamed hit", s.resp)
			checkStreamed(t, "streamed hit", s, prompt, usage, false)
			if s.text() != miss.Choices[0].Message.Content {
				t.Errorf("streamed hit (usage %v) assembled %q, non-streamed miss said %q", usage, s.text(), miss.Choices[0].Message.Content)
			}
			if usage && s.acc.Usage.TotalTokens != miss.Usage.TotalTokens {
				t.Errorf("streamed hit usage %+v, non-streamed miss usage %+v", s.acc.Usage, miss.Usage)
			}
		}
		e.wantUpstreamCalls(t, pathChat, 1, "the streamed hits")
	})

	t.Run("streamed miss then hits", func(t *testing.T) {
		base := e.upstreamCalls(pathChat)
		prompt := uniquePrompt(t, "Name a tree")

		// What the same SDK gets straight from the model, without edgecache.
		directClient := newGoSDKClient(e.sim.URL() + "/v1")
		direct, err := directClient.Chat.Completions.New(e.ctx, chatParams(prompt))
		if err != nil {
			t.Fatalf("direct request to llmsim: %v", err)
		}
		want := direct.Choices[0].Message.Content
		base++

		miss := e.chatStream(t, "streamed miss", prompt, true)
		wantMiss(t, "streamed miss", miss.resp, false)
		checkStreamed(t, "streamed miss", miss, prompt, true, true)
		if miss.text() != want {
			t.Errorf("streamed miss assembled %q, the model's non-streamed answer is %q", miss.text(), want)
		}
		e.wantUpstreamCalls(t, pathChat, base+1, "the streamed miss")

		// The streamed answer was stored: a non-streamed request hits it.
		hit, hitResp := e.chatOnce(t, "non-streamed hit", prompt)
		wantHit(t, "non-streamed hit", hitResp)
		if got := hit.Choices[0].Message.Content; got != miss.text() {
			t.Errorf("non-streamed hit content %q, streamed miss assembled %q", got, miss.text())
		}
		if hit.Usage.CompletionTokens != miss.acc.Usage.CompletionTokens || hit.Usage.PromptTokens != miss.acc.Usage.PromptTokens {
			t.Errorf("non-streamed hit usage %+v, streamed miss usage %+v", hit.Usage, miss.acc.Usage)
		}
		if hit.ID != miss.acc.ID {
			t.Errorf("non-streamed hit id %q, streamed miss id %q", hit.ID, miss.acc.ID)
		}

		// And a streamed request is replayed from it.
		again := e.chatStream(t, "streamed hit", prompt, true)
		wantHit(t, "streamed hit", again.resp)
		checkStreamed(t, "streamed hit", again, prompt, true, false)
		if again.text() != miss.text() {
			t.Errorf("streamed hit assembled %q, streamed miss %q", again.text(), miss.text())
		}
		e.wantUpstreamCalls(t, pathChat, base+1, "the hits")
	})

	t.Run("cut stream is an error and is not stored", func(t *testing.T) {
		base := e.upstreamCalls(pathChat)
		prompt := uniquePrompt(t, "Name a river")

		e.sim.Server.SetFault(llmsim.Fault{CutAfter: 3})
		cut := e.chatStream(t, "cut stream", prompt, true)
		e.sim.Server.ClearFault()
		if cut.err == nil {
			t.Fatalf("a stream cut by the upstream after 3 words ended without an error; the SDK assembled %q", cut.text())
		}
		// edgecache ends the relayed stream with an error event, which the
		// SDK reports as a StreamError (a bare broken connection would be an
		// I/O error instead).
		var se *ssestream.StreamError
		if !errors.As(cut.err, &se) || !strings.Contains(se.Error(), "stream_interrupted") {
			t.Errorf("cut stream: stream.Err() = %v (%T), want an SDK StreamError from edgecache's stream_interrupted event", cut.err, cut.err)
		}
		if got := strings.Fields(cut.text()); len(got) >= sdkAnswerWords {
			t.Errorf("cut stream assembled a complete answer %q", cut.text())
		}
		e.wantUpstreamCalls(t, pathChat, base+1, "the cut stream")

		// The partial answer must not have been stored: the same request,
		// fault cleared, goes upstream again and gets the whole answer.
		again := e.chatStream(t, "after the cut", prompt, true)
		wantMiss(t, "after the cut", again.resp, false)
		checkStreamed(t, "after the cut", again, prompt, true, true)
		if !strings.HasPrefix(again.text(), cut.text()) {
			t.Errorf("the cut stream's text %q is not a prefix of the full answer %q", cut.text(), again.text())
		}
		e.wantUpstreamCalls(t, pathChat, base+2, "the request after the cut")

		hit, hitResp := e.chatOnce(t, "hit after the cut", prompt)
		wantHit(t, "hit after the cut", hitResp)
		if got := hit.Choices[0].Message.Content; got != again.text() {
			t.Errorf("hit after the cut %q, the complete streamed answer %q", got, again.text())
		}
		e.wantUpstreamCalls(t, pathChat, base+2, "the hit after the cut")
	})
}

func TestGoSDKCompletions(t *testing.T) {
	e := newSDKEnv(t)
	prompt := uniquePrompt(t, "Once upon a time")
	params := openai.CompletionNewParams{
		Model:  openai.CompletionNewParamsModelGPT3_5TurboInstruct,
		Prompt: openai.CompletionNewParamsPromptUnion{OfString: openai.String(prompt)},
	}

	var missResp *http.Response
	miss, err := e.client.Completions.New(e.ctx, params, option.WithResponseInto(&missResp))
	if err != nil {
		t.Fatalf("miss: Completions.New: %v", err)
	}
	wantMiss(t, "miss", missResp, true)
	if len(miss.Choices) != 1 {
		t.Fatalf("miss: %d choices, want 1: %s", len(miss.Choices), miss.RawJSON())
	}
	checkAnswerText(t, "miss", miss.Choices[0].Text, prompt)
	e.wantUpstreamCalls(t, pathCompletions, 1, "the miss")

	var hitResp *http.Response
	hit, err := e.client.Completions.New(e.ctx, params, option.WithResponseInto(&hitResp))
	if err != nil {
		t.Fatalf("hit: Completions.New: %v", err)
	}
	wantHit(t, "hit", hitResp)
	if len(hit.Choices) != 1 || hit.Choices[0].Text != miss.Choices[0].Text || hit.ID != miss.ID ||
		hit.Usage.TotalTokens != miss.Usage.TotalTokens {
		t.Errorf("hit differs from miss:\nmiss %s\nhit  %s", miss.RawJSON(), hit.RawJSON())
	}

	// The stored answer replayed as a stream.
	var streamResp *http.Response
	stream := e.client.Completions.NewStreaming(e.ctx, params, option.WithResponseInto(&streamResp))
	var text strings.Builder
	chunks := 0
	for stream.Next() {
		chunks++
		for _, c := range stream.Current().Choices {
			text.WriteString(c.Text)
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("streamed hit: stream.Err() = %v", err)
	}
	_ = stream.Close()
	wantHit(t, "streamed hit", streamResp)
	if chunks < 1 {
		t.Errorf("streamed hit: no chunks")
	}
	if text.String() != miss.Choices[0].Text {
		t.Errorf("streamed hit assembled %q, miss said %q", text.String(), miss.Choices[0].Text)
	}
	e.wantUpstreamCalls(t, pathCompletions, 1, "the hits")
}

func TestGoSDKEmbeddings(t *testing.T) {
	e := newSDKEnv(t)

	// want returns llmsim's vector for text. llmsim computes float32s; the
	// SDK holds float64s parsed from their shortest decimal form (float) or
	// widened from their bits (base64): both narrow back to the same
	// float32s.
	want := func(text string) []float32 {
		v := make([]float32, sdkEmbeddingDims)
		llmsim.Vector(v, text)
		return v
	}
	sameVector := func(got []float64, want []float32) bool {
		if len(got) != len(want) {
			return false
		}
		for i := range got {
			if float32(got[i]) != want[i] {
				return false
			}
		}
		return true
	}
	equal := func(a, b []float64) bool {
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

	for _, tc := range []struct {
		name   string
		format openai.EmbeddingNewParamsEncodingFormat
	}{
		{"float", openai.EmbeddingNewParamsEncodingFormatFloat},
		{"base64", openai.EmbeddingNewParamsEncodingFormatBase64},
		{"default", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := e.upstreamCalls(pathEmbeddings)
			inputs := []string{uniquePrompt(t, "first"), uniquePrompt(t, "second")}
			params := openai.EmbeddingNewParams{
				Model:          openai.EmbeddingModelTextEmbedding3Small,
				Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: inputs},
				EncodingFormat: tc.format,
			}
			get := func(what string) (*openai.CreateEmbeddingResponse, *http.Response) {
				t.Helper()
				var resp *http.Response
				res, err := e.client.Embeddings.New(e.ctx, params, option.WithResponseInto(&resp))
				if err != nil {
					t.Fatalf("%s: Embeddings.New: %v", what, err)
				}
				if len(res.Data) != len(inputs) {
					t.Fatalf("%s: %d embeddings, want %d", what, len(res.Data), len(inputs))
				}
				for i, d := range res.Data {
					if d.Index != int64(i) || !sameVector(d.Embedding, want(inputs[i])) {
						t.Errorf("%s: embedding %d (index %d) is not llmsim's vector of %q:\ngot  %v\nwant %v",
							what, i, d.Index, inputs[i], d.Embedding, want(inputs[i]))
					}
				}
				return res, resp
			}

			miss, missResp := get("miss")
			wantMiss(t, "miss", missResp, true)
			e.wantUpstreamCalls(t, pathEmbeddings, base+1, "the miss")

			hit, hitResp := get("hit")
			wantHit(t, "hit", hitResp)
			for i := range miss.Data {
				if !equal(hit.Data[i].Embedding, miss.Data[i].Embedding) {
					t.Errorf("embedding %d differs between miss and hit", i)
				}
			}
			if hit.Usage.PromptTokens != miss.Usage.PromptTokens || hit.Usage.TotalTokens != miss.Usage.TotalTokens || hit.Model != miss.Model {
				t.Errorf("hit (model %q, usage %+v) differs from miss (model %q, usage %+v)", hit.Model, hit.Usage, miss.Model, miss.Usage)
			}
			e.wantUpstreamCalls(t, pathEmbeddings, base+1, "the hit")
		})
	}
}

// nodeSDKDir holds the Node SDK test: package.json pins the openai package,
// package-lock.json its exact release.
const nodeSDKDir = "testdata/sdk-node"

// TestNodeSDK runs the official Node SDK against edgecache: sdk.mjs checks
// the answers and Cache-Status headers, this test the upstream call counts.
func TestNodeSDK(t *testing.T) {
	node, dir := nodeSDK(t)
	e := newSDKEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "sdk.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"EDGECACHE_BASE_URL="+e.data+"/v1",
		"EDGECACHE_SIM_URL="+e.sim.URL(), // for the cut-stream check
		"EDGECACHE_EXPECT_WORDS="+strconv.Itoa(sdkAnswerWords),
		"EDGECACHE_EXPECT_DIMS="+strconv.Itoa(sdkEmbeddingDims))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		version, _ := exec.Command(node, "--version").Output()
		t.Fatalf("node sdk.mjs (node %s) failed (%v):\n%s", strings.TrimSpace(string(version)), err, out.String())
	}
	t.Logf("node sdk.mjs:\n%s", out.String())
	if !strings.Contains(out.String(), "all 5 checks passed") {
		t.Fatalf("node sdk.mjs exited 0 without reporting its 5 checks as passed:\n%s", out.String())
	}

	// Which requests reached the model: chat, a non-streamed miss, a
	// streamed miss, the cut stream and the request after it; embeddings,
	// the default (base64) miss and the float one. Every other request was
	// a hit.
	e.wantUpstreamCalls(t, pathChat, 4, "the Node SDK checks")
	e.wantUpstreamCalls(t, pathEmbeddings, 2, "the Node SDK checks")
}

// nodeSDK finds node and npm, installs the pinned SDK into nodeSDKDir if
// needed, and returns node's path and the directory's.
func nodeSDK(t *testing.T) (node, dir string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is not on PATH: the Node SDK test needs Node.js and npm (make deps installs them)")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatal("npm is not on PATH: the Node SDK test needs Node.js and npm (make deps installs them)")
	}
	if dir, err = filepath.Abs(nodeSDKDir); err != nil {
		t.Fatal(err)
	}
	ensureNodeModules(t, npm, dir)
	return node, dir
}

// ensureNodeModules installs the locked packages with npm ci unless the
// pinned openai release is already installed.
func ensureNodeModules(t *testing.T, npm, dir string) {
	t.Helper()
	var pkg struct {
		Dependencies map[string]string `json:"dependencies"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "package.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	pinned := pkg.Dependencies["openai"]
	if pinned == "" {
		t.Fatal("package.json does not pin the openai package")
	}
	var installed struct {
		Version string `json:"version"`
	}
	if b, err := os.ReadFile(filepath.Join(dir, "node_modules", "openai", "package.json")); err == nil {
		_ = json.Unmarshal(b, &installed)
	}
	if installed.Version == pinned {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("npm ci in %s: %v\n%s", dir, err, out)
	}
	t.Logf("npm ci (openai %s was %q):\n%s", pinned, installed.Version, out)
}
