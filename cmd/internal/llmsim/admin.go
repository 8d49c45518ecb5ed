package llmsim

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// This file serves /v1/models and the control endpoints under /_sim/.

func (s *Server) serveModels(w http.ResponseWriter) {
	var b []byte
	b = append(b, `{"object":"list","data":[`...)
	for i, id := range [...]string{"sim-1", "sim-embed-1"} {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"id":"`...)
		b = append(b, id...)
		b = append(b, `","object":"model","created":`...)
		b = strconv.AppendInt(b, s.created, 10)
		b = append(b, `,"owned_by":"llmsim"}`...)
	}
	b = append(b, "]}\n"...)
	writeBody(w, http.StatusOK, b)
}

// serveFaults: GET shows the fault ({} when none), POST sets one, DELETE
// clears it.
func (s *Server) serveFaults(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Fault())
	case http.MethodPost:
		var f Fault
		if err := decodeStrict(r.Body, &f); err != nil {
			writeError(w, http.StatusBadRequest, "invalid fault: "+err.Error(), "")
			return
		}
		if err := f.Validate(); err != nil {
			writeError(w, http.StatusBadRequest, "invalid fault: "+err.Error(), "")
			return
		}
		s.SetFault(f)
		writeJSON(w, http.StatusOK, s.Fault())
	case http.MethodDelete:
		s.ClearFault()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeMethodNotAllowed(w, r, "GET, POST, DELETE")
	}
}

// serveStats: GET returns the per-path counters, DELETE resets them.
func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.Stats())
	case http.MethodDelete:
		s.ResetStats()
		w.WriteHeader(http.StatusNoContent)
	default:
		writeMethodNotAllowed(w, r, "GET, DELETE")
	}
}

// configJSON is the wire form of Config for /_sim/config. In a PUT, absent
// fields keep their value.
type configJSON struct {
	TTFTMS         *float64 `json:"ttft_ms"`
	TokensPerSec   *float64 `json:"tokens_per_sec"`
	AnswerTokens   *int     `json:"answer_tokens"`
	MaxConcurrency *int     `json:"max_concurrency"`
	EmbeddingDims  *int     `json:"embedding_dims"`
	// EmbeddingFold is Config.EmbeddingFold; a GET shows it only when it
	// is on, so the default answer is the same as before the knob existed.
	EmbeddingFold *bool `json:"embedding_fold,omitempty"`
	// Canonical is the map of Server.SetCanonical ({"paraphrase":
	// "canonical question"}); a PUT replaces the whole map ({} clears it).
	// Shown only when set.
	Canonical map[string]string `json:"canonical,omitempty"`
	// Reword is SetCanonical's reword; shown only when on.
	Reword *bool `json:"reword,omitempty"`
	// CacheControl is Config.CacheControl; shown only when set ("" in a
	// PUT clears it).
	CacheControl *string `json:"cache_control,omitempty"`
}

func configToJSON(c Config) configJSON {
	ttft := float64(c.TTFT) / float64(time.Millisecond)
	j := configJSON{
		TTFTMS:         &ttft,
		TokensPerSec:   &c.TokensPerSec,
		AnswerTokens:   &c.AnswerTokens,
		MaxConcurrency: &c.MaxConcurrency,
		EmbeddingDims:  &c.EmbeddingDims,
	}
	if c.EmbeddingFold {
		j.EmbeddingFold = &c.EmbeddingFold
	}
	if c.CacheControl != "" {
		j.CacheControl = &c.CacheControl
	}
	return j
}

// withCanonical adds the canonical map and reword flag, when set, to j.
func (s *Server) withCanonical(j configJSON) configJSON {
	m, reword := s.Canonical()
	if len(m) > 0 {
		j.Canonical = m
	}
	if reword {
		j.Reword = &reword
	}
	return j
}

// apply copies the fields present in p onto c.
func (p configJSON) apply(c *Config) error {
	if p.TTFTMS != nil {
		ms := *p.TTFTMS
		if !(ms >= 0 && ms <= float64(maxTTFT/time.Millisecond)) {
			return errors.New("ttft_ms must be between 0 and 3600000")
		}
		c.TTFT = time.Duration(ms * float64(time.Millisecond))
	}
	if p.TokensPerSec != nil {
		c.TokensPerSec = *p.TokensPerSec
	}
	if p.AnswerTokens != nil {
		c.AnswerTokens = *p.AnswerTokens
	}
	if p.MaxConcurrency != nil {
		c.MaxConcurrency = *p.MaxConcurrency
	}
	if p.EmbeddingDims != nil {
		c.EmbeddingDims = *p.EmbeddingDims
	}
	if p.EmbeddingFold != nil {
		c.EmbeddingFold = *p.EmbeddingFold
	}
	if p.CacheControl != nil {
		if strings.ContainsAny(*p.CacheControl, "\r\n") {
			return errors.New("cache_control must be one header line")
		}
		c.CacheControl = *p.CacheControl
	}
	return c.Validate()
}

// serveConfig: GET shows the knobs, PUT changes the fields it names.
func (s *Server) serveConfig(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		writeJSON(w, http.StatusOK, s.withCanonical(configToJSON(s.Config())))
	case http.MethodPut:
		var p configJSON
		if err := decodeStrict(r.Body, &p); err != nil {
			writeError(w, http.StatusBadRequest, "invalid config: "+err.Error(), "")
			return
		}
		cfg, err := s.updateConfig(p.apply)
		if err == nil && (p.Canonical != nil || p.Reword != nil) {
			m, reword := s.Canonical()
			if p.Canonical != nil {
				m = p.Canonical
			}
			if p.Reword != nil {
				reword = *p.Reword
			}
			err = s.SetCanonical(m, reword)
		}
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid config: "+err.Error(), "")
			return
		}
		writeJSON(w, http.StatusOK, s.withCanonical(configToJSON(cfg)))
	default:
		writeMethodNotAllowed(w, r, "GET, PUT")
	}
}

// decodeStrict decodes one JSON object, rejecting unknown fields (a typo in
// a fault must not silently do nothing) and trailing data.
func decodeStrict(body io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("unexpected data after the JSON object")
	}
	return nil
}
