package verify

// DegradedFloor is the default lowest verifier score at which a route's
// degraded rung serves the nearest stored answer while the upstream is
// failing (a route's degraded_floor). It is a calibrated score, not a raw
// cosine: the verifier score whose measured precision on held-out pairs is
// at least 0.80, so that even the nearest answer served in an outage is
// usually right. It is lower than DefaultThreshold on purpose: an answer
// scored between the two is served only with a disclosure in its body
// naming the earlier question it answers (see the pipeline's
// semantic-nearest rung). The measurement, its data and the command that
// reproduces it are in the README section "Degraded floor".
const DegradedFloor float32 = 0.81
