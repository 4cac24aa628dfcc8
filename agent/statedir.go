package agent

import (
	"errors"
	"fmt"

	"github.com/dsr-agent/dsr-agent/internal/safedir"
)

// ErrUnsafeStateDir marks a state dir that another user could change: its
// files decide which addresses root deletes and which sysctls it writes.
var ErrUnsafeStateDir = errors.New("unsafe state dir")

// CheckStateDir refuses a state dir that is, or lies under, a directory a
// user other than root can change (a sticky directory like /tmp is fine for
// entries root owns).
func CheckStateDir(dir string) error {
	if err := safedir.Check(dir); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafeStateDir, err)
	}
	return nil
}
