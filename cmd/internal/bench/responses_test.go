package bench

import (
	"strings"
	"testing"

	"github.com/edgecache/edgecache/cmd/internal/openai"
)

func TestResponsesRow(t *testing.T) {
	req, err := openai.ParseRequest(openai.APIResponses, []byte(ResponsesBody))
	if err != nil || req.ServerState() != "" || req.Stream {
		t.Fatalf("ResponsesBody is not a cacheable Responses request: %v", err)
	}
	if !strings.Contains(LuaScript(ResponsesBody, nil), "capital of France") {
		t.Fatal("the script does not send the body")
	}
	rs := append(sampleResults(), row(ScenarioResponsesHit, 32, 0, 1, 1))
	var hit Result
	for _, r := range rs {
		if r.Scenario == ScenarioHit && r.Conns == 32 {
			hit = r
		}
	}
	rs[len(rs)-1].RequestsPerSec = hit.RequestsPerSec * 0.95
	ts := ComputeTargets(rs, []int{32})
	last := ts[len(ts)-1]
	if last.Name != "Responses exact hits / chat exact hits @32" || !last.Known || !last.Pass || !near(last.Value, 0.95) {
		t.Fatalf("Responses target %+v", last)
	}
	if n := len(ComputeTargets(sampleResults(), []int{32})); n != len(ts)-1 {
		t.Fatalf("without the row: %d targets, want %d", n, len(ts)-1)
	}
	var b strings.Builder
	if err := WriteMarkdown(&b, Report{Results: rs, Targets: ts}); err != nil || !strings.Contains(b.String(), "(g) edgecache exact L1 hit, Responses API") {
		t.Fatalf("report: %v\n%s", err, b.String())
	}
}
