package detect

import (
	"encoding/json"
	"fmt"
)

// stateVersion is the version of the serialized state.
const stateVersion = 1

// MarshalState serializes everything the detector holds: the cells of
// windows not yet evaluated, the rollouts, the sequential tests and the
// advisories held for de-duplication. A detector restored from it
// continues exactly where this one stands: same later findings, no advisory
// repeated.
func (d *Detector) MarshalState() ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st.Version = stateVersion
	return json.Marshal(d.st)
}

// Restore replaces the detector's state with one from MarshalState.
func (d *Detector) Restore(b []byte) error {
	st := newState()
	if err := json.Unmarshal(b, st); err != nil {
		return fmt.Errorf("detect: restore: %w", err)
	}
	if st.Version != stateVersion {
		return fmt.Errorf("detect: restore: state version %d, want %d", st.Version, stateVersion)
	}
	for _, ro := range st.Rollouts {
		if ro.Builds == nil {
			ro.Builds = map[string]uint64{}
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.st = st
	return nil
}
