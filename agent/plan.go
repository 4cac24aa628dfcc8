package agent

import (
	"fmt"
	"strings"
)

// Plan is the ordered list of changes that brings the host to the config.
// Apply output, --dry-run, status, the daemon's log lines and health's
// /status are all renderings of it.
type Plan struct {
	Changes []Change `json:"changes"`
	// Notes are what the operator must hear beside the changes, e.g. that
	// saved sysctl values were lost with an unreadable state file.
	Notes []string `json:"notes,omitempty"`
}

// Empty reports whether there is nothing to do on the host (forgetting a
// stale state entry is not a change an operator needs to hear about).
func (p *Plan) Empty() bool {
	if p == nil {
		return true
	}
	for _, c := range p.Changes {
		if !c.bookkeeping {
			return false
		}
	}
	return true
}

// NotesOrNil is the plan's notes (none for a nil plan).
func (p *Plan) NotesOrNil() []string {
	if p == nil {
		return nil
	}
	return p.Notes
}

// Visible is the changes an operator sees (bookkeeping left out).
func (p *Plan) Visible() []Change {
	var out []Change
	if p != nil {
		for _, c := range p.Changes {
			if !c.bookkeeping {
				out = append(out, c)
			}
		}
	}
	return out
}

// String renders the plan as the commands an administrator would type.
func (p *Plan) String() string {
	if p == nil {
		return ""
	}
	var b strings.Builder
	for _, c := range p.Visible() {
		b.WriteString(c.String())
	}
	for _, n := range p.Notes {
		fmt.Fprintf(&b, "# warning: %s\n", n)
	}
	return b.String()
}

// LogAttrs is the change as the daemon logs it (slog key-value pairs).
func (c Change) LogAttrs(extra ...any) []any {
	return append([]any{"kind", c.Kind, "subject", c.Subject, "reason", c.Reason, "command", c.Command}, extra...)
}

// String renders one change: its command and why.
func (c Change) String() string {
	switch {
	case c.render != nil:
		return c.render()
	case c.Reason != "":
		return fmt.Sprintf("%s  # %s\n", c.Command, c.Reason)
	default:
		return c.Command + "\n"
	}
}
