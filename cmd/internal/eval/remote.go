package eval

import (
	"context"
	"fmt"
	"time"

	"github.com/edgecache/edgecache/embed"
	"github.com/edgecache/edgecache/embed/remote"
)

// The environment variables --remote-url, --remote-model and
// --remote-api-key fall back to.
const (
	envRemoteURL    = "EDGECACHE_EMBED_URL"
	envRemoteModel  = "EDGECACHE_EMBED_MODEL"
	envRemoteAPIKey = "EDGECACHE_EMBED_API_KEY"
)

// remoteOptions configure --embedder remote: the server's embed/remote
// client (so the embedder is named remote:MODEL, as in the server, and a
// model fitted here is the server's), with a longer deadline than the
// request path's and retries, for runs over tens of thousands of texts.
type remoteOptions struct {
	url, model, apiKey string
	timeout            time.Duration
	batch              int // texts per call
}

// fromEnv fills what the flags left empty from the environment.
func (r *remoteOptions) fromEnv(getenv func(string) string) {
	for _, f := range []struct {
		dst  *string
		name string
	}{{&r.url, envRemoteURL}, {&r.model, envRemoteModel}, {&r.apiKey, envRemoteAPIKey}} {
		if *f.dst == "" {
			*f.dst = getenv(f.name)
		}
	}
}

// remoteRetries and remoteRetryWait: a failed call is tried again after
// remoteRetryWait, doubling, remoteRetries times (an embeddings API under
// load answers 429 or 503 now and then; a long run should not end on one).
const (
	remoteRetries   = 3
	remoteRetryWait = 500 * time.Millisecond
)

func (r *remoteOptions) open() (embed.Embedder, error) {
	e, err := remote.New(remote.Config{URL: r.url, Model: r.model, APIKey: r.apiKey, Timeout: r.timeout,
		// Retries, not the breaker, pace a batch job: let the breaker's
		// probe through by the time of the next retry.
		OpenFor: remoteRetryWait})
	if err != nil {
		return nil, err
	}
	return &remoteBatches{Embedder: e, n: r.batch, retries: remoteRetries, wait: remoteRetryWait}, nil
}

// remoteBatches splits an Embed call into calls of at most n texts and
// retries each failed call.
type remoteBatches struct {
	embed.Embedder
	n       int
	retries int
	wait    time.Duration
}

// Embed implements embed.Embedder.
func (r *remoteBatches) Embed(ctx context.Context, texts []string) ([]embed.Vector, error) {
	out := make([]embed.Vector, 0, len(texts))
	for lo := 0; lo < len(texts); lo += r.n {
		hi := min(lo+r.n, len(texts))
		vs, err := r.call(ctx, texts[lo:hi])
		if err != nil {
			return nil, err
		}
		if len(vs) != hi-lo {
			return nil, fmt.Errorf("embedder %s returned %d vectors for %d texts", r.Name(), len(vs), hi-lo)
		}
		out = append(out, vs...)
	}
	return out, nil
}

func (r *remoteBatches) call(ctx context.Context, texts []string) ([]embed.Vector, error) {
	wait := r.wait
	for attempt := 0; ; attempt++ {
		vs, err := r.Embedder.Embed(ctx, texts)
		if err == nil || attempt == r.retries || ctx.Err() != nil {
			return vs, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait *= 2
	}
}
