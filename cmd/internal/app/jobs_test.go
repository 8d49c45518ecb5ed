package app

// Background jobs at the edge (issue 18) against llmsim limited to 4
// concurrent calls: the unmodified Node SDK's background responses, many
// jobs drained without exceeding the upstream's limit, paid before free,
// and a replica stopped mid-run whose jobs the next one finishes.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgecache/edgecache/cache/cachetest"
	"github.com/edgecache/edgecache/cmd/internal/llmsim"
)

const jobsYAML = `routes:
  - name: responses
    path: /v1/responses
    jobs: {enabled: true, ttl: 1h, max_per_tenant: 500}
admission:
  concurrency: {initial: 4, min: 1, max: 4}
tenants:
  - {name: acme, lane: paid, api_keys: [sk-bg-paid]}
  - {name: thrift, lane: free, api_keys: [sk-bg-free]}
`

// startJobsEnv starts llmsim (at most 4 concurrent generations) and
// returns it with the path of an edgecache configuration enabling jobs.
func startJobsEnv(t *testing.T, sc llmsim.Config) (*llmsim.Running, string) {
	t.Helper()
	sc.MaxConcurrency = 4
	if sc.AnswerTokens == 0 {
		sc.AnswerTokens = sdkAnswerWords
	}
	sim, err := llmsim.Start(context.Background(), "127.0.0.1:0", sc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	if err := os.WriteFile(cfg, []byte(jobsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	return sim, cfg
}

func TestBackgroundJobsNodeSDK(t *testing.T) {
	node, dir := nodeSDK(t)
	sim, cfg := startJobsEnv(t, llmsim.Config{})
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "background.mjs")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "EDGECACHE_BASE_URL="+data+"/v1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("node background.mjs failed (%v):\n%s", err, out.String())
	}
	t.Logf("node background.mjs:\n%s", out.String())
	if !strings.Contains(out.String(), "all 4 checks passed") {
		t.Fatalf("node background.mjs did not report its 4 checks as passed:\n%s", out.String())
	}
}

type jobView struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Edgecache struct {
		Position int `json:"position"`
	} `json:"edgecache"`
	finished time.Time // X-Edgecache-Job-Finished
}

func jobCall(t *testing.T, method, url, key, body string) (int, jobView) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var v jobView
	_ = json.Unmarshal(b, &v)
	v.finished, _ = time.Parse(time.RFC3339Nano, resp.Header.Get("X-Edgecache-Job-Finished"))
	if resp.StatusCode == 200 && v.ID == "" {
		t.Fatalf("%s %s: %s", method, url, b)
	}
	return resp.StatusCode, v
}

func submitJob(t *testing.T, data, key, prompt string) string {
	t.Helper()
	st, v := jobCall(t, http.MethodPost, data+pathResponses, key,
		fmt.Sprintf(`{"model":"gpt-4o-mini","input":%q,"background":true}`, prompt))
	if st != 200 || (v.Status != "queued" && v.Status != "in_progress" && v.Status != "completed") {
		t.Fatalf("submit: %d %+v", st, v)
	}
	return v.ID
}

// waitJobs polls until every job is finished and returns when each was
// first seen completed.
func waitJobs(t *testing.T, data string, ids map[string]string) map[string]time.Time {
	t.Helper()
	done := map[string]time.Time{}
	deadline := time.Now().Add(90 * time.Second)
	for len(done) < len(ids) && time.Now().Before(deadline) {
		for id, key := range ids {
			if _, ok := done[id]; ok {
				continue
			}
			st, v := jobCall(t, http.MethodGet, data+pathResponses+"/"+id, key, "")
			switch {
			case st != 200:
				t.Fatalf("GET %s: %d", id, st)
			case v.Status == "completed" && v.finished.IsZero():
				t.Fatalf("job %s completed without X-Edgecache-Job-Finished", id)
			case v.Status == "completed":
				// When the edge finished it, not when this sweep of
				// polls saw it (a sweep of 200 GETs takes a while).
				done[id] = v.finished
			case v.Status != "queued" && v.Status != "in_progress":
				t.Fatalf("job %s: %s", id, v.Status)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(done) < len(ids) {
		t.Fatalf("%d of %d jobs completed", len(done), len(ids))
	}
	return done
}

// watchInFlight samples llmsim's concurrent generations until stopped and
// returns the most seen.
func watchInFlight(sim *llmsim.Running) (stop func() int) {
	var peak atomic.Int64
	quit := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			if n := int64(sim.Server.InFlight()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-quit:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	return func() int { close(quit); wg.Wait(); return int(peak.Load()) }
}

func TestBackgroundJobsManyPaidFirst(t *testing.T) {
	// The model is slow (5 s to a first token) while the 200 jobs are
	// submitted, so the queue holds them all however long submitting takes
	// on a loaded machine; then it answers in 100 ms (40 calls/s).
	sim, cfg := startJobsEnv(t, llmsim.Config{TTFT: 5 * time.Second})
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	stop := watchInFlight(sim)
	ids := map[string]string{}
	var paid, free []string
	for i := range 100 {
		f := submitJob(t, data, "sk-bg-free", fmt.Sprintf("free job %d %s", i, t.Name()))
		p := submitJob(t, data, "sk-bg-paid", fmt.Sprintf("paid job %d %s", i, t.Name()))
		ids[f], ids[p] = "sk-bg-free", "sk-bg-paid"
		free, paid = append(free, f), append(paid, p)
	}
	fast := sim.Server.Config()
	fast.TTFT = 100 * time.Millisecond
	sim.Server.SetConfig(fast)
	if st, _ := jobCall(t, http.MethodGet, data+pathResponses+"/"+paid[99], "sk-bg-free", ""); st != 404 {
		t.Errorf("another tenant's job: %d, want 404", st)
	}
	done := waitJobs(t, data, ids)
	if peak := stop(); peak > 4 {
		t.Errorf("llmsim saw %d concurrent calls, limit 4", peak)
	}
	// The first 100 to finish are paid but for the few free jobs that
	// started before the paid ones were queued (the model takes 4 at a
	// time) and runs a busy answer sent back: a busy job keeps its place
	// (runWindow), so free jobs cannot overtake paid ones while it waits.
	// Finish times are the edge's (X-Edgecache-Job-Finished).
	order := make([]string, 0, len(done))
	for id := range done {
		order = append(order, id)
	}
	sort.Slice(order, func(a, b int) bool { return done[order[a]].Before(done[order[b]]) })
	paidFirst := 0
	for _, id := range order[:100] {
		if ids[id] == "sk-bg-paid" {
			paidFirst++
		}
	}
	if paidFirst < 90 {
		t.Errorf("%d of the first 100 jobs to finish are paid, want at least 90", paidFirst)
	}
	t.Logf("paid among the first 100 to finish: %d", paidFirst)
	var seq strings.Builder
	for _, id := range order {
		seq.WriteString(map[string]string{"sk-bg-paid": "P", "sk-bg-free": "f"}[ids[id]])
	}
	t.Logf("finish order: %s", seq.String())
}

// A replica stopped mid-run loses no job: the next one started with the
// same jobs file finishes them.
func TestBackgroundJobsReplicaStopped(t *testing.T) {
	sim, cfg := startJobsEnv(t, llmsim.Config{TTFT: 50 * time.Millisecond})
	file := filepath.Join(t.TempDir(), "jobs.json")
	t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	ctx, cancel := context.WithCancel(context.Background())
	data1, stopped := runEdge(t, ctx, sim.URL(), cfg, file)
	ids := map[string]string{}
	for i := range 40 {
		ids[submitJob(t, data1, "sk-bg-paid", fmt.Sprintf("replica job %d %s", i, t.Name()))] = "sk-bg-paid"
	}
	time.Sleep(100 * time.Millisecond) // some are running
	cancel()
	<-stopped
	data2, _ := runEdge(t, context.Background(), sim.URL(), cfg, file)
	waitJobs(t, data2, ids)
}

// runEdge runs edgecache with jobs file until ctx is done (then closes
// the returned channel).
func runEdge(t *testing.T, ctx context.Context, upstream, cfg, file string, extra ...string) (string, chan struct{}) {
	t.Helper()
	y, _ := os.ReadFile(cfg)
	c2 := filepath.Join(t.TempDir(), "edgecache.yaml")
	os.WriteFile(c2, append(y, []byte("degrade: {jobs_file: "+file+"}\n")...), 0o600)
	ctx, cancel := context.WithCancel(ctx)
	r, w := io.Pipe()
	stopped := make(chan struct{})
	t.Cleanup(func() {
		// Stop it and wait, before the test's temporary directories (its
		// journal, jobs file) are removed under a process still writing.
		cancel()
		select {
		case <-stopped:
		case <-time.After(15 * time.Second):
			t.Error("edgecache did not stop within 15 s")
		}
	})
	go func() {
		defer close(stopped)
		_ = Run(ctx, append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--journal-dir", t.TempDir(),
			"--upstream", upstream, "--config", c2}, extra...), w, io.Discard)
		w.Close()
	}()
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		sent := false
		for sc.Scan() {
			if m := listeningLine.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- "http://" + m[1]
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, r)
	}()
	select {
	case a := <-addr:
		return a, stopped
	case <-time.After(20 * time.Second):
		t.Fatal("edgecache did not start")
	}
	return "", nil
}

// Two replicas share the jobs through Redis: jobs submitted to the first,
// which stops mid-run, are finished by the second.
func TestBackgroundJobsRedisReplicas(t *testing.T) {
	rds := cachetest.StartRedis(t)
	sim, cfg := startJobsEnv(t, llmsim.Config{TTFT: 50 * time.Millisecond})
	t.Setenv("EDGECACHE_POLICY_FILE", filepath.Join(t.TempDir(), "routes.json"))
	ctx, cancel := context.WithCancel(context.Background())
	data1, stopped := runEdge(t, ctx, sim.URL(), cfg, filepath.Join(t.TempDir(), "jobs1.json"), "--redis", rds.Addr())
	data2, _ := runEdge(t, context.Background(), sim.URL(), cfg, filepath.Join(t.TempDir(), "jobs2.json"), "--redis", rds.Addr())
	stop := watchInFlight(sim)
	ids := map[string]string{}
	for i := range 60 {
		ids[submitJob(t, data1, "sk-bg-paid", fmt.Sprintf("redis job %d %s", i, t.Name()))] = "sk-bg-paid"
	}
	time.Sleep(150 * time.Millisecond) // some are running, on both
	cancel()
	<-stopped
	waitJobs(t, data2, ids)
	if peak := stop(); peak > 8 {
		t.Errorf("llmsim saw %d concurrent calls, two replicas of limit 4", peak)
	}
}

// Chat Completions with Prefer: respond-async (RFC 7240): 202 with the
// job's Location, whose GET returns the completion once done; another
// key gets 404.
func TestBackgroundJobsChatRespondAsync(t *testing.T) {
	sim, _ := startJobsEnv(t, llmsim.Config{})
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	os.WriteFile(cfg, []byte("routes:\n  - name: chat\n    path: /v1/chat/completions\n    jobs: {enabled: true}\n"), 0o600)
	data, _ := startEdgecache(t, sim.URL(), "--config", cfg)
	prompt := uniquePrompt(t, "async chat")
	req, _ := http.NewRequest(http.MethodPost, data+pathChat, strings.NewReader(
		fmt.Sprintf(`{"model":"gpt-4o-mini","messages":[{"role":"user","content":%q}]}`, prompt)))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-async-owner")
	req.Header.Set("Prefer", "respond-async, wait=0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, pathChat+"/jobs/") || resp.Header.Get("Preference-Applied") != "respond-async" {
		t.Fatalf("submit: %d Location %q Preference-Applied %q", resp.StatusCode, loc, resp.Header.Get("Preference-Applied"))
	}
	get := func(key string) (int, string) {
		r, _ := http.NewRequest(http.MethodGet, data+loc, nil)
		r.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, _ := get("sk-async-other"); st != http.StatusNotFound {
		t.Errorf("another key: %d, want 404", st)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		st, body := get("sk-async-owner")
		if st != 200 {
			t.Fatalf("GET %s: %d %s", loc, st, body)
		}
		if strings.Contains(body, `"chat.completion"`) {
			var cc struct {
				Choices []struct {
					Message struct{ Content string } `json:"message"`
				} `json:"choices"`
			}
			if err := json.Unmarshal([]byte(body), &cc); err != nil || len(cc.Choices) == 0 || cc.Choices[0].Message.Content == "" {
				t.Fatalf("completion %s: %v", body, err)
			}
			checkAnswerText(t, "async chat", cc.Choices[0].Message.Content, prompt)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the async chat job did not complete")
}

// The journal records every job's state changes: accepted with the
// position its client was told, started after a wait, completed, and the
// answer expired after the route's ttl; the admin API and the CLI filter
// them by rung and reason.
func TestBackgroundJobsJournal(t *testing.T) {
	sim, _ := startJobsEnv(t, llmsim.Config{TTFT: 100 * time.Millisecond})
	cfg := filepath.Join(t.TempDir(), "edgecache.yaml")
	os.WriteFile(cfg, []byte(strings.Replace(jobsYAML, "ttl: 1h", "ttl: 1s", 1)), 0o600)
	data, admin := startEdgecache(t, sim.URL(), "--config", cfg)
	told := map[string]int{} // job id → position the client was told
	ids := map[string]string{}
	for i := range 30 { // more than the 16 workers: the last ones are told a place
		st, v := jobCall(t, http.MethodPost, data+pathResponses, "sk-bg-paid",
			fmt.Sprintf(`{"model":"gpt-4o-mini","input":"journal job %d %s","background":true}`, i, t.Name()))
		if st != 200 {
			t.Fatalf("submit: %d", st)
		}
		told[v.ID], ids[v.ID] = v.Edgecache.Position, "sk-bg-paid"
	}
	waitJobs(t, data, ids)
	type rec struct {
		Time                 time.Time
		Tenant, Lane, Reason string
		Status               int
		Job                  struct {
			ID         string
			Position   int
			WaitMillis int64 `json:"wait_ms"`
			Outcome    string
		}
	}
	byJob := map[string]map[string]rec{}
	deadline := time.Now().Add(15 * time.Second) // the ttl, then the janitor's tick
	for time.Now().Before(deadline) {
		code, b := get(t, admin+"/admin/degradations?since=10m&rung=job&limit=1000", "")
		var res struct{ Degradations []rec }
		if code != 200 || json.Unmarshal(b, &res) != nil {
			t.Fatalf("degradations: %d %s", code, b)
		}
		byJob = map[string]map[string]rec{}
		for _, r := range res.Degradations {
			if byJob[r.Job.ID] == nil {
				byJob[r.Job.ID] = map[string]rec{}
			}
			byJob[r.Job.ID][r.Reason] = r
		}
		expired := 0
		for id := range told {
			if _, ok := byJob[id]["expired"]; ok {
				expired++
			}
		}
		if expired == len(told) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	tenants, queuedBehind, waited := map[string]bool{}, 0, 0
	for id, pos := range told {
		rs := byJob[id]
		for _, reason := range []string{"queued", "started", "completed", "expired"} {
			if _, ok := rs[reason]; !ok {
				t.Fatalf("job %s: no %s record (has %v)", id, reason, rs)
			}
		}
		if q := rs["queued"]; q.Job.Position != pos || q.Status != 200 || q.Lane != "paid" || !strings.HasPrefix(q.Tenant, "t:") {
			t.Errorf("job %s queued record %+v: want position %d (told), status 200, lane paid, a t: tenant", id, q, pos)
		}
		if pos > 0 {
			queuedBehind++
		}
		// The wait is from acceptance to the start, as the records' times say.
		w := time.Duration(rs["started"].Job.WaitMillis) * time.Millisecond
		if gap := rs["started"].Time.Sub(rs["queued"].Time); w < 0 || gap-w > 100*time.Millisecond || w-gap > 100*time.Millisecond {
			t.Errorf("job %s: started %v after its queued record, wait_ms says %v", id, gap, w)
		}
		if w > 0 {
			waited++
		}
		if c := rs["completed"]; c.Status != 200 || c.Job.Outcome != "completed" {
			t.Errorf("job %s completed record %+v", id, c)
		}
		tenants[rs["queued"].Tenant] = true
	}
	t.Logf("%d of %d jobs were told a place in the queue, %d waited for a worker", queuedBehind, len(told), waited)
	if len(tenants) != 1 || queuedBehind == 0 || waited == 0 {
		t.Errorf("tenants %v (want one, the key's), %d jobs told a place in the queue, %d waited (want some of each)", tenants, queuedBehind, waited)
	}
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"degradations", "--admin", admin, "--rung", "job", "--reason", "expired"}, &out, &errOut); err != nil {
		t.Fatalf("CLI: %v %s", err, errOut.String())
	}
	if n := strings.Count(out.String(), " expired "); n != len(told) {
		t.Errorf("CLI --rung job --reason expired: %d lines, want %d:\n%s", n, len(told), out.String())
	}
}
