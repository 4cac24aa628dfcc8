package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Parsing and the errors of a config: decoding errors with their line, and
// the field errors validation collects.

// MaxConfigSize bounds what is read of a config file: a real one is a few
// kilobytes, and a huge invalid one must not cost a gigabyte of memory and a
// million error lines.
const MaxConfigSize = 1 << 20

// ParseConfig parses and validates YAML config text: one config.yaml and no
// drop-ins, through the same decoding as the files (decodeDoc).
func ParseConfig(data []byte) (*Config, error) {
	raw, err := decodeDoc(data)
	switch {
	case errors.Is(err, errEmptyConfig), errors.Is(err, errManyDocs):
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, capLines(yamlMessage(err)))
	}
	return raw.validate()
}

var (
	// errEmptyConfig: an empty or comment-only file is a truncated write or
	// a mistake, never "no VIPs": tearing the host down is remove's job.
	errEmptyConfig = errors.New("the config is empty (or only comments): expected at least `vips:` " +
		"(write `vips: []` for a host with no VIPs; `dsr-agent remove` undoes everything)")
	// errManyDocs: a second document would be silently ignored by a single
	// Decode.
	errManyDocs = errors.New("more than one YAML document (---): expected exactly one")
)

// decodeDoc decodes one YAML document into the raw shapes through yaml.Node
// (decodeRaw: unknown keys refused, each error with its line).
func decodeDoc(data []byte) (*rawConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	var raw rawConfig
	if err == nil {
		err = decodeRaw(&doc, &raw)
	}
	switch {
	case errors.Is(err, io.EOF) || (err == nil && raw.empty()):
		return nil, errEmptyConfig
	case err != nil:
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errManyDocs
	}
	return &raw, nil
}

// yamlMessage is a decoding error as the config's errors say it: a syntax
// error as yaml.v3's parser words it, without its "yaml: " prefix.
func yamlMessage(err error) string { return strings.TrimPrefix(err.Error(), "yaml: ") }

// fieldErrors collects every problem so one run reports them all.
type fieldErrors []fieldError

// fieldError is one problem: the field (vips[1].address) and what is wrong.
type fieldError struct{ field, msg string }

func (e *fieldErrors) add(field, value, expected string) {
	*e = append(*e, fieldError{field, fmt.Sprintf("%q: expected %s", value, expected)})
}

// maxErrorLines caps what one run prints: the first errors say what is
// wrong, a million more only flood the journal.
const maxErrorLines = 20

func (e fieldErrors) err() error {
	if len(e) == 0 {
		return nil
	}
	return &fieldErrorList{items: e}
}

// fieldErrorList is the error of a config that fails validation. where, when
// set, names the file and line each field was written at (drop-ins).
type fieldErrorList struct {
	items fieldErrors
	where func(field string) string
}

func (l *fieldErrorList) Error() string {
	lines := make([]string, len(l.items))
	for i, it := range l.items {
		lines[i] = it.field + ": " + it.msg
		if l.where != nil {
			if at := l.where(it.field); at != "" {
				lines[i] = at + ": " + lines[i]
			}
		}
	}
	return ErrInvalidConfig.Error() + ":\n  " + capLines(strings.Join(lines, "\n  "))
}

func (l *fieldErrorList) Unwrap() error { return ErrInvalidConfig }

// withOrigins makes err's field errors name where each field was written.
func withOrigins(err error, where func(string) string) error {
	var l *fieldErrorList
	if where != nil && errors.As(err, &l) {
		l.where = where
	}
	return err
}

// capLines keeps the first maxErrorLines lines and counts the rest.
func capLines(s string) string {
	lines := strings.SplitAfterN(s, "\n", maxErrorLines+1)
	if len(lines) <= maxErrorLines {
		return s
	}
	rest := strings.Count(lines[maxErrorLines], "\n") + 1
	return strings.Join(lines[:maxErrorLines], "") + fmt.Sprintf("  … and %s more", thousands(rest))
}

// thousands renders n with comma separators (1,139,412).
func thousands(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// hostErr is err for problems found by comparing the config with the host.
func (e fieldErrors) hostErr() error {
	if len(e) == 0 {
		return nil
	}
	return &hostMismatch{e.err()}
}

type hostMismatch struct{ error }

func (h *hostMismatch) Unwrap() []error { return []error{h.error, ErrHostMismatch} }
