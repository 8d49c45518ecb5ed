package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode"
)

// ModelFormat names the verifier model file format this package reads and
// writes. A file of another format is refused, never guessed at.
//
// A model file is one JSON object (edgecache eval --fit --fit-out writes
// it; a server loads it with semantic.verifier_model):
//
//	{
//	  "format": "edgecache-verifier-v1",
//	  "embedder": "remote:bge-m3",      // embed.Embedder.Name whose cosines it was fitted on
//	  "inputs": ["cosine", …],          // the model inputs, in order (InputName)
//	  "cuts": [[0.75, …], …],           // each input's cuts (Cuts)
//	  "bias": -0.56,
//	  "steps": [[0.53, …], …],          // steps[i][k] applies when input i > cuts[i][k]
//	  "threshold": 0.867,               // the default minimum score of a hit, in (0, 1)
//	  "min_cosine": 0.92,               // the retrieval pre-filter, in [-1, 1]: nothing under it is retrieved
//	  "cosine_threshold": 0.9685,       // the cosine-only comparison point, in [-1, 1]
//	  "fitted_on": {…}                  // what it was fitted on (FitInfo); optional, informational
//	}
//
// Fitting sets min_cosine to the lossless pre-filter at the threshold
// (Model.MinCosineAt) or the cosine fitting started at, whichever is
// higher: under the latter the model saw no pairs. A server keeps
// lookups at a lower threshold (the degraded floor) to it too.
//
// The inputs and cuts are part of the file so that a model fitted for
// another build of the verifier (inputs added, cuts moved) is refused with
// a message to refit, rather than read with its steps in the wrong
// places. Unknown fields are refused too: a misspelt "treshold" must not
// load as a model without its threshold.
const ModelFormat = "edgecache-verifier-v1"

// maxModelFile bounds the size of a model file read (a real one is ~3 KB).
const maxModelFile = 1 << 20

// maxStep bounds the magnitude of the bias and of every step: a fitted
// step is a few units of log-odds; anything near this is a broken file.
const maxStep = 100

// ModelFile is a verifier model fitted outside the binary, with the name
// of the embedder it was fitted for.
type ModelFile struct {
	// Embedder is the name of the embedder (embed.Embedder.Name) whose
	// cosines the model was fitted on, e.g. "remote:bge-m3".
	Embedder string
	Model    Model
	// FittedOn says what the model was fitted on; nil when unknown.
	FittedOn *FitInfo
}

// FitInfo is what a model was fitted on and how it scored on the pairs
// held out of fitting. It is informational: nothing reads it to decide.
type FitInfo struct {
	// File is the base name of the pairs file; SHA256 its content's hash.
	File   string `json:"file"`
	SHA256 string `json:"sha256,omitempty"`
	// Pairs counts the file's pairs, split by connected question into
	// TrainingPairs and HeldOutPairs.
	Pairs         int `json:"pairs"`
	TrainingPairs int `json:"training_pairs"`
	HeldOutPairs  int `json:"held_out_pairs"`
	// Labels is what counted as a positive while fitting.
	Labels string `json:"labels,omitempty"`
	// TargetPrecision is the training precision the threshold was set to
	// reach.
	TargetPrecision float64 `json:"target_precision,omitempty"`
	// HeldOut is cache mode on the held-out pairs at the threshold;
	// HeldOutPairwise scores each held-out pair on its own.
	HeldOut         *FitScore `json:"held_out,omitempty"`
	HeldOutPairwise *FitScore `json:"held_out_pairwise,omitempty"`
	// FittedAt is when (RFC 3339); Version the edgecache build.
	FittedAt string `json:"fitted_at,omitempty"`
	Version  string `json:"version,omitempty"`
}

// FitScore is precision and recall at the model's threshold.
type FitScore struct {
	Count     string  `json:"count,omitempty"` // what made a hit correct
	Hits      int     `json:"hits"`
	Correct   int     `json:"correct"`
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
}

// modelJSON is a Model on the wire. The scalars are pointers so that a
// missing field is told apart from a zero.
type modelJSON struct {
	Inputs          []string    `json:"inputs"`
	Cuts            [][]float32 `json:"cuts"`
	Bias            *float32    `json:"bias"`
	Steps           [][]float32 `json:"steps"`
	Threshold       *float32    `json:"threshold"`
	MinCosine       *float32    `json:"min_cosine"`
	CosineThreshold *float32    `json:"cosine_threshold"`
}

type fileJSON struct {
	Format   string `json:"format"`
	Embedder string `json:"embedder"`
	modelJSON
	FittedOn *FitInfo `json:"fitted_on,omitempty"`
}

func toJSON(m *Model) modelJSON {
	j := modelJSON{
		Inputs: inputNames[:], Cuts: cuts[:], Steps: m.Steps[:],
		Bias: &m.Bias, Threshold: &m.Threshold, MinCosine: &m.MinCosine, CosineThreshold: &m.CosineThreshold,
	}
	return j
}

// model checks j against this build's inputs and cuts and returns the
// Model it holds (validated).
func (j *modelJSON) model() (Model, error) {
	var m Model
	switch {
	case j.Inputs == nil:
		return m, errors.New("missing field inputs")
	case !slices.Equal(j.Inputs, inputNames[:]):
		return m, fmt.Errorf("inputs %q are not this verifier's %q: the model was fitted for another version; refit it (edgecache eval --fit --fit-out)",
			j.Inputs, inputNames[:])
	case j.Cuts == nil:
		return m, errors.New("missing field cuts")
	case j.Steps == nil:
		return m, errors.New("missing field steps")
	case j.Bias == nil:
		return m, errors.New("missing field bias")
	case j.Threshold == nil:
		return m, errors.New("missing field threshold")
	case j.MinCosine == nil:
		return m, errors.New("missing field min_cosine")
	case j.CosineThreshold == nil:
		return m, errors.New("missing field cosine_threshold")
	case len(j.Cuts) != NumInputs:
		return m, fmt.Errorf("cuts: %d inputs, want %d", len(j.Cuts), NumInputs)
	case len(j.Steps) != NumInputs:
		return m, fmt.Errorf("steps: %d inputs, want %d", len(j.Steps), NumInputs)
	}
	for i := range NumInputs {
		if !slices.Equal(j.Cuts[i], cuts[i]) {
			return m, fmt.Errorf("cuts of %s are %v, this verifier's are %v: the model was fitted for another version; refit it (edgecache eval --fit --fit-out)",
				inputNames[i], j.Cuts[i], cuts[i])
		}
	}
	m.Bias, m.Threshold, m.MinCosine, m.CosineThreshold = *j.Bias, *j.Threshold, *j.MinCosine, *j.CosineThreshold
	for i, st := range j.Steps {
		m.Steps[i] = slices.Clone(st)
	}
	return m, m.Validate()
}

// Validate reports why m cannot serve: a step count that does not match
// its input's cuts, a number that is not finite or not sane, a threshold
// outside (0, 1), a cosine outside [-1, 1], a fixed difference (Prior)
// weakened, or a step against its input's Sign (a difference counting for
// a match). Fitting (cmd/internal/eval) makes models that pass.
func (m *Model) Validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	sane := func(x float32) bool { return !math.IsNaN(float64(x)) && math.Abs(float64(x)) <= maxStep }
	if !sane(m.Bias) {
		bad("bias %v: want a finite number within ±%d", m.Bias, maxStep)
	}
	for i, st := range m.Steps {
		name := inputNames[i]
		if len(st) != len(cuts[i]) {
			bad("steps of %s: %d, want one per cut (%d)", name, len(st), len(cuts[i]))
			continue
		}
		for k, x := range st {
			if !sane(x) {
				bad("step %d of %s is %v: want a finite number within ±%d", k, name, x, maxStep)
			}
		}
		if w, fixed := Prior(i); fixed {
			if len(st) > 0 && st[0] > w {
				bad("step 0 of %s is %v: a fixed difference may be stronger than %v, not weaker", name, st[0], w)
			}
		}
		// Fitting pins wrong-signed steps at zero; allow rounding.
		const eps = 1e-4
		if s := Sign(i); s != 0 {
			for k, x := range st {
				if float32(s)*x < -eps {
					bad("step %d of %s is %v: against its sign (%+d; a difference never counts for a match)", k, name, x, s)
				}
			}
		}
	}
	if !(m.Threshold > 0 && m.Threshold < 1) {
		bad("threshold %v: want a score in (0, 1)", m.Threshold)
	}
	if !(m.MinCosine >= -1 && m.MinCosine <= 1) {
		bad("min_cosine %v: want a cosine in [-1, 1]", m.MinCosine)
	}
	if !(m.CosineThreshold >= -1 && m.CosineThreshold <= 1) {
		bad("cosine_threshold %v: want a cosine in [-1, 1]", m.CosineThreshold)
	}
	return errors.Join(errs...)
}

// MarshalJSON implements json.Marshaler: the model fields of a model file
// (inputs, cuts, bias, steps, threshold, min_cosine, cosine_threshold). It
// fails when m does not Validate.
func (m Model) MarshalJSON() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("verifier model: %w", err)
	}
	return json.Marshal(toJSON(&m))
}

// UnmarshalJSON implements json.Unmarshaler: the object MarshalJSON
// writes, checked against this build's inputs and cuts and validated.
// Unknown fields are refused.
func (m *Model) UnmarshalJSON(b []byte) error {
	var j modelJSON
	if err := strictDecode(b, &j); err != nil {
		return fmt.Errorf("verifier model: %w", err)
	}
	got, err := j.model()
	if err != nil {
		return fmt.Errorf("verifier model: %w", err)
	}
	*m = got
	return nil
}

// MarshalJSON implements json.Marshaler: the ModelFormat object. It fails
// when the embedder is missing or the model does not Validate.
func (f ModelFile) MarshalJSON() ([]byte, error) {
	if err := checkEmbedderName(f.Embedder); err != nil {
		return nil, err
	}
	if err := f.Model.Validate(); err != nil {
		return nil, fmt.Errorf("verifier model: %w", err)
	}
	return json.Marshal(fileJSON{Format: ModelFormat, Embedder: f.Embedder, modelJSON: toJSON(&f.Model), FittedOn: f.FittedOn})
}

// UnmarshalJSON implements json.Unmarshaler: a ModelFormat object, checked
// against this build's inputs and cuts and validated.
func (f *ModelFile) UnmarshalJSON(b []byte) error {
	var head struct {
		Format *string `json:"format"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("not a verifier model file: %w", err)
	}
	switch {
	case head.Format == nil:
		return fmt.Errorf("not a verifier model file: no \"format\" (want %q)", ModelFormat)
	case *head.Format != ModelFormat:
		return fmt.Errorf("format %q: this edgecache reads %q", *head.Format, ModelFormat)
	}
	var j fileJSON
	if err := strictDecode(b, &j); err != nil {
		return err
	}
	if err := checkEmbedderName(j.Embedder); err != nil {
		return err
	}
	m, err := j.model()
	if err != nil {
		return err
	}
	*f = ModelFile{Embedder: j.Embedder, Model: m, FittedOn: j.FittedOn}
	return nil
}

func checkEmbedderName(s string) error {
	if strings.TrimSpace(s) == "" {
		return errors.New("missing field embedder (the embedder the model was fitted for, e.g. \"remote:bge-m3\")")
	}
	if strings.IndexFunc(s, unicode.IsControl) >= 0 {
		return fmt.Errorf("embedder %q: control characters", s)
	}
	return nil
}

// strictDecode decodes exactly one JSON value into v, refusing unknown
// fields and trailing data.
func strictDecode(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("trailing data after the JSON object")
	}
	return nil
}

// ReadModelFile reads and validates a model file (ModelFormat). Errors
// name the path.
func ReadModelFile(path string) (ModelFile, error) {
	fh, err := os.Open(path)
	if err != nil {
		return ModelFile{}, fmt.Errorf("verifier model: %w", err)
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, maxModelFile+1))
	if err != nil {
		return ModelFile{}, fmt.Errorf("verifier model %s: %w", path, err)
	}
	if len(b) > maxModelFile {
		return ModelFile{}, fmt.Errorf("verifier model %s: larger than %d bytes", path, maxModelFile)
	}
	var f ModelFile
	if err := json.Unmarshal(b, &f); err != nil {
		return ModelFile{}, fmt.Errorf("verifier model %s: %w", path, err)
	}
	return f, nil
}

// WriteModelFile writes f to path (indented JSON), through a temporary
// file renamed into place, so that a reader never sees half a model.
func WriteModelFile(path string, f ModelFile) error {
	b, err := f.encode()
	if err != nil {
		return fmt.Errorf("verifier model %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("verifier model: %w", err)
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("verifier model %s: %w", path, err)
	}
	return nil
}

// encode is MarshalJSON laid out for people: one field per line, one
// input's cuts or steps per line.
func (f ModelFile) encode() ([]byte, error) {
	compact, err := f.MarshalJSON() // validates
	if err != nil {
		return nil, err
	}
	var j fileJSON
	if err := json.Unmarshal(compact, &j); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	field := func(name string, v any, last bool) error {
		x, err := json.Marshal(v)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "  %q: %s", name, x)
		if !last {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		return nil
	}
	rows := func(name string, rs [][]float32) error {
		fmt.Fprintf(&b, "  %q: [\n", name)
		for i, r := range rs {
			x, err := json.Marshal(r)
			if err != nil {
				return err
			}
			sep := ","
			if i == len(rs)-1 {
				sep = ""
			}
			fmt.Fprintf(&b, "    %s%s\n", x, sep)
		}
		b.WriteString("  ],\n")
		return nil
	}
	b.WriteString("{\n")
	err = errors.Join(
		field("format", j.Format, false),
		field("embedder", j.Embedder, false),
		field("inputs", j.Inputs, false),
		rows("cuts", j.Cuts),
		field("bias", j.Bias, false),
		rows("steps", j.Steps),
		field("threshold", j.Threshold, false),
		field("min_cosine", j.MinCosine, false),
		field("cosine_threshold", j.CosineThreshold, j.FittedOn == nil),
	)
	if err != nil {
		return nil, err
	}
	if j.FittedOn != nil {
		x, err := json.MarshalIndent(j.FittedOn, "  ", "  ")
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "  \"fitted_on\": %s\n", x)
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// BuiltInCalibration names the built-in calibration NewFor, DefaultThreshold
// and MinCosine use for the named embedder: "lexical-v1" for the lexical
// embedder, DefaultEmbedder (USE-lite's) for every other name, including
// names it was not fitted for, such as a remote embedder's.
func BuiltInCalibration(embedderName string) string {
	if strings.HasPrefix(embedderName, "lexical") {
		return "lexical-v1"
	}
	return DefaultEmbedder
}
