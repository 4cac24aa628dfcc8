package probe

// SetCapture lets the lab tests record frames for testdata.
func SetCapture(fn func(kind string, f *Flow, frame []byte)) { capture = fn }

// Captured is one recorded frame (testdata/captured/*.json).
type Captured struct {
	Kind  string // sent, answer, neigh
	Flow  Flow
	Frame string // hex
}
