package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/dsr-agent/dsr-agent/internal/confdir"
)

// DefaultConfigDir is where drop-ins are read from (env
// DSR_AGENT_CONFIG_DIR): /etc/dsr-agent/config.d/*.yaml, after config.yaml,
// in lexical order.
const DefaultConfigDir = "/etc/dsr-agent/config.d"

// LoadConfig reads the config file and the drop-ins of dir ("" or a missing
// directory: none), merges them (lists appended, a later scalar wins) and
// validates the result. It touches nothing on the host; checks that need the
// host are in Resolve. Every error names the file and line it came from.
func LoadConfig(path, dir string) (*Config, error) {
	cfg, _, err := LoadEffective(path, dir)
	return cfg, err
}

// LoadEffective is LoadConfig that also returns the merged tree, for
// `validate --print`.
func LoadEffective(path, dir string) (*Config, *confdir.Merged, error) {
	files, err := confdir.Read(path, dir, MaxConfigSize)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return ParseFiles(files)
}

// ParseFiles merges and validates config sources, the main file first.
func ParseFiles(files []confdir.File) (*Config, *confdir.Merged, error) {
	// Each file alone first: an unknown key or a wrong type is reported
	// with the file it is in (the merged tree has lines but no files).
	for _, f := range files {
		if err := decodeStrict(f); err != nil {
			return nil, nil, err
		}
	}
	merged, err := confdir.Merge(files)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	var raw rawConfig
	if merged.Root != nil {
		if err := decodeRaw(merged.Root, &raw); err != nil {
			// Each file decoded alone, so this is a clash only the merge
			// made; yaml.v3 still names the line.
			return nil, nil, fmt.Errorf("%w: merged config: %s", ErrInvalidConfig, capLines(yamlMessage(err)))
		}
	}
	if raw.empty() {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrInvalidConfig, files[0].Path, errEmptyConfig)
	}
	where := func(field string) string {
		o, _ := merged.Origin(field)
		return o.String()
	}
	cfg, err := raw.validate()
	if err != nil {
		return nil, nil, withOrigins(err, where)
	}
	cfg.origin = where
	return cfg, merged, nil
}

// decodeStrict decodes one file into the raw shapes (decodeDoc) and names
// the file in its errors. An empty drop-in sets nothing; an empty
// config.yaml is refused (errEmptyConfig).
func decodeStrict(f confdir.File) error {
	_, err := decodeDoc(f.Data)
	switch {
	case errors.Is(err, errEmptyConfig) && f.DropIn:
		return nil
	case errors.Is(err, errEmptyConfig), errors.Is(err, errManyDocs):
		return fmt.Errorf("%w: %s: %w", ErrInvalidConfig, f.Path, err)
	case err != nil:
		return fmt.Errorf("%w: %s", ErrInvalidConfig, capLines(fileMessage(f.Path, yamlMessage(err))))
	}
	return nil
}

// fileMessage turns "line 3: msg" lines (decodeRaw's, yaml.v3's syntax
// errors) into "FILE:3: msg".
func fileMessage(path, msg string) string {
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		t := strings.TrimSpace(l)
		if rest, ok := strings.CutPrefix(t, "line "); ok {
			if n, tail, ok := strings.Cut(rest, ": "); ok {
				lines[i] = strings.Replace(l, t, path+":"+n+": "+tail, 1)
				continue
			}
		}
		if t != "" {
			lines[i] = strings.Replace(l, t, path+": "+t, 1)
		}
	}
	return strings.Join(lines, "\n")
}

// Origin names the file and line a field of the config was written at
// (vips[1].address -> /etc/dsr-agent/config.d/10-host.yaml:4); "" for a
// config not read from files or a field no file wrote.
func (c *Config) Origin(field string) string {
	if c == nil || c.origin == nil {
		return ""
	}
	return c.origin(field)
}
