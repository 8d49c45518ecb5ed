package llmsim

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// maxEmbeddingInputs is OpenAI's limit on inputs per request.
const maxEmbeddingInputs = 2048

type embeddingRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	Dimensions     *int            `json:"dimensions"`
	EncodingFormat string          `json:"encoding_format"`
}

// parseEmbeddingInput accepts a string or an array of strings; token arrays
// are rejected.
func parseEmbeddingInput(raw json.RawMessage) ([]string, *apiError) {
	p := bytes.TrimLeft(raw, " \t\r\n")
	switch {
	case len(p) == 0 || p[0] == 'n':
		return nil, badRequest("input", "you must provide an input parameter")
	case p[0] == '"':
		var s string
		if err := json.Unmarshal(p, &s); err != nil {
			return nil, badRequest("input", "Invalid input: "+err.Error())
		}
		return []string{s}, nil
	case p[0] == '[':
		var in []string
		if err := json.Unmarshal(p, &in); err != nil {
			return nil, badRequest("input", "Invalid input: llmsim accepts a string or an array of strings (token arrays are not supported).")
		}
		if len(in) == 0 || len(in) > maxEmbeddingInputs {
			return nil, badRequest("input", "'input' must hold between 1 and 2048 strings")
		}
		return in, nil
	}
	return nil, badRequest("input", "Invalid type for 'input': expected a string or an array of strings.")
}

// serveEmbeddings answers /v1/embeddings; f is the fault that applies, or nil.
func (s *Server) serveEmbeddings(w http.ResponseWriter, body []byte, cfg *Config, f *fault, deployment string) {
	var er embeddingRequest
	if err := json.Unmarshal(body, &er); err != nil {
		writeAPIError(w, decodeError(err))
		return
	}
	if er.Model == "" {
		er.Model = deployment
	}
	if er.Model == "" {
		writeAPIError(w, badRequest("model", "you must provide a model parameter"))
		return
	}
	inputs, aerr := parseEmbeddingInput(er.Input)
	if aerr != nil {
		writeAPIError(w, aerr)
		return
	}
	s.embedded.Add(int64(len(inputs)))
	dims := cfg.EmbeddingDims
	if er.Dimensions != nil {
		if *er.Dimensions < 1 || *er.Dimensions > maxEmbeddingDims {
			writeAPIError(w, badRequest("dimensions", "'dimensions' must be between 1 and 65536"))
			return
		}
		dims = *er.Dimensions
	}
	var asBase64 bool
	switch er.EncodingFormat {
	case "", "float":
	case "base64":
		asBase64 = true
	default:
		writeAPIError(w, badRequest("encoding_format", "'encoding_format' must be \"float\" or \"base64\""))
		return
	}
	if f != nil && f.Empty {
		inputs = nil
	}

	bp := getBytes()
	defer putBytes(bp)
	b := append((*bp)[:0], `{"object":"list","data":[`...)
	vec := make([]float32, dims)
	var raw []byte // little-endian float32s, for base64
	if asBase64 {
		raw = make([]byte, 4*dims)
	}
	tokens := 0
	var folded []byte // scratch for EmbeddingFold, reused across inputs
	for i, in := range inputs {
		tokens += countWords(in)
		if cfg.EmbeddingFold {
			folded = appendFolded(folded[:0], in)
			vectorOf(vec, folded)
		} else {
			Vector(vec, in)
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"object":"embedding","index":`...)
		b = strconv.AppendInt(b, int64(i), 10)
		b = append(b, `,"embedding":`...)
		if asBase64 {
			for j, v := range vec {
				binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
			}
			b = append(b, '"')
			b = base64.StdEncoding.AppendEncode(b, raw)
			b = append(b, '"')
		} else {
			b = append(b, '[')
			for j, v := range vec {
				if j > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, float64(v), 'g', -1, 32)
			}
			b = append(b, ']')
		}
		b = append(b, '}')
	}
	b = append(b, `],"model":`...)
	b = appendJSONString(b, er.Model)
	b = append(b, `,"usage":{"prompt_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, `,"total_tokens":`...)
	b = strconv.AppendInt(b, int64(tokens), 10)
	b = append(b, "}}\n"...)
	*bp = b
	if f != nil && f.CutAfter > 0 {
		writeTruncated(w, b) // does not return: it aborts the handler
	}
	writeBody(w, http.StatusOK, b)
}

// Vector fills dst with the unit vector llmsim returns as the embedding of
// text: pseudo-random components in [-1, 1) from a splitmix64 generator
// seeded with sha256(text), L2-normalised. Equal texts get equal vectors;
// different texts get unrelated ones (there is no semantics). Exported so
// tests elsewhere can predict what llmsim answers.
func Vector(dst []float32, text string) { vectorOf(dst, []byte(text)) }

// vectorOf is Vector of the bytes of a text.
func vectorOf(dst []float32, text []byte) {
	sum := sha256.Sum256(text)
	seed := binary.LittleEndian.Uint64(sum[:8])
	// Two passes over the same sequence: the first for the norm, the second
	// to write, so no float64 scratch slice is needed.
	var norm float64
	g := splitmix64(seed)
	for range dst {
		v := g.unit()
		norm += v * v
	}
	norm = math.Sqrt(norm)
	g = splitmix64(seed)
	for i := range dst {
		dst[i] = float32(g.unit() / norm)
	}
}

// FoldEmbeddingText returns text as llmsim embeds it when
// Config.EmbeddingFold is on: lower-cased (unicode.ToLower, rune by rune),
// every run of white space (unicode.IsSpace) replaced by one space, leading
// and trailing white space removed; invalid UTF-8 bytes are kept as they
// are. With the knob on, llmsim answers Vector(FoldEmbeddingText(text)),
// so tests elsewhere can predict it.
func FoldEmbeddingText(text string) string { return string(appendFolded(nil, text)) }

// appendFolded appends FoldEmbeddingText(s) to dst without allocating
// beyond dst's growth.
func appendFolded(dst []byte, s string) []byte {
	start := len(dst)
	space := false // a white-space run is pending (written before the next word)
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			i++
			switch {
			case c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r':
				space = len(dst) > start
				continue
			case 'A' <= c && c <= 'Z':
				c += 'a' - 'A'
			}
			if space {
				dst, space = append(dst, ' '), false
			}
			dst = append(dst, c)
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 { // invalid UTF-8: keep the byte
			if space {
				dst, space = append(dst, ' '), false
			}
			dst = append(dst, c)
			i++
			continue
		}
		i += n
		if unicode.IsSpace(r) {
			space = len(dst) > start
			continue
		}
		if space {
			dst, space = append(dst, ' '), false
		}
		dst = utf8.AppendRune(dst, unicode.ToLower(r))
	}
	return dst
}

// splitmix64 is Vigna's tiny 64-bit generator; its state is its output
// counter.
type splitmix64 uint64

func (g *splitmix64) next() uint64 {
	*g += 0x9e3779b97f4a7c15
	z := uint64(*g)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// unit returns a value in [-1, 1).
func (g *splitmix64) unit() float64 {
	return float64(g.next()>>11)/(1<<53)*2 - 1
}
