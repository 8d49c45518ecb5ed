package eval

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/edgecache/edgecache/cache/semantic/verify"
)

// calibration is what a run scores with: a fitted model file's
// (--verifier-model) or the built-in calibration for the embedder.
type calibration struct {
	fitted                     scorer  // nil: the built-in one
	threshold, cosineThreshold float32 // the defaults of --threshold
	warning                    string  // why the figures may say little
}

// loadCalibration reads --verifier-model, which must have been fitted for
// the run's embedder (the first member of a Router, whose name joins its
// members' with "+"), as the server requires.
func loadCalibration(o *options, name string) (calibration, error) {
	first, _, _ := strings.Cut(name, "+")
	if o.verifierModel == "" {
		c := calibration{threshold: verify.DefaultThreshold(name), cosineThreshold: verify.DefaultCosineThreshold(name)}
		if strings.HasPrefix(name, "remote:") {
			c.warning = fmt.Sprintf("the verifier uses its built-in calibration (%s's), whose scores and threshold mean little for %s: fit one on your pairs (--fit --fit-out FILE) and score with --verifier-model FILE",
				verify.BuiltInCalibration(name), name)
		}
		return c, nil
	}
	f, err := verify.ReadModelFile(o.verifierModel)
	if err != nil {
		return calibration{}, err
	}
	if f.Embedder != first {
		return calibration{}, fmt.Errorf("--verifier-model %s was fitted for embedder %q, not %s: its scores mean nothing for another embedder's cosines",
			o.verifierModel, f.Embedder, first)
	}
	return calibration{fitted: floored{verify.NewModel(f.Model), f.Model.MinCosine},
		threshold: f.Model.Threshold, cosineThreshold: f.Model.CosineThreshold}, nil
}

// floored is a model file's verifier, whose pre-filter never goes under
// the file's min_cosine, as in the server (see verify.ModelFormat).
type floored struct {
	*verify.Verifier
	min float32
}

// MinCosine implements scorer.
func (f floored) MinCosine(threshold float32) float32 {
	return max(f.Verifier.MinCosine(threshold), f.min)
}

// writeFitted writes --fit-out: m, fitted for the embedder named name on
// o.pairs, with how it scored on the held-out pairs.
func writeFitted(o *options, name string, m verify.Model, info verify.FitInfo) error {
	if m.Threshold >= 1 {
		return fmt.Errorf("--fit-out: no threshold reached training precision %.2f with at least 20 hits, so there is no model to write: the file is too small, or the embedder does not separate its pairs; try more pairs or a lower --fit-precision",
			o.fitPrecision)
	}
	first, _, _ := strings.Cut(name, "+")
	info.File = filepath.Base(o.pairs)
	if sum, err := fileSHA256(o.pairs); err == nil {
		info.SHA256 = sum
	}
	info.FittedAt = time.Now().UTC().Format(time.RFC3339)
	info.Version = buildRevision()
	return verify.WriteModelFile(o.fitOut, verify.ModelFile{Embedder: first, Model: m, FittedOn: &info})
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildRevision is the VCS revision the binary was built from, or "".
func buildRevision() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}
