// Package docs holds the tests that keep the manuals true to the code.
package docs

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/dsr-agent/dsr-agent/agent"
)

// docKey is one row of config.md's key table.
type docKey struct {
	path, typ, def, modes string
	line                  int
}

var keyCell = regexp.MustCompile("^`([a-z0-9_]+(?:\\[\\])?(?:\\.[a-z0-9_]+(?:\\[\\])?)*)`$")

// documentedKeys reads the table under "## Keys" in config.md: every row
// whose first cell is a key path in backquotes.
func documentedKeys(t *testing.T, path string) []docKey {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var keys []docKey
	in := false
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Keys"
			continue
		}
		if !in || !strings.HasPrefix(line, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		m := keyCell.FindStringSubmatch(cells[0])
		if m == nil {
			continue // the header and its rule
		}
		if len(cells) < 5 {
			t.Errorf("%s:%d: key %s: want 5 cells (key, type, default, modes, meaning), have %d", path, n, m[1], len(cells))
			continue
		}
		keys = append(keys, docKey{path: m[1], typ: cells[1], def: cells[2], modes: cells[3], line: n})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(keys) == 0 {
		t.Fatalf("%s: no key table under \"## Keys\"", path)
	}
	return keys
}

// TestConfigDocListsEveryKey fails when the parser accepts a key config.md
// does not list, or config.md lists one the parser does not have.
func TestConfigDocListsEveryKey(t *testing.T) {
	doc := documentedKeys(t, "config.md")
	documented := map[string]bool{}
	for _, k := range doc {
		if documented[k.path] {
			t.Errorf("config.md:%d: key %s listed twice", k.line, k.path)
		}
		documented[k.path] = true
		if k.typ == "" || k.modes == "" {
			t.Errorf("config.md:%d: key %s: the type and modes cells must not be empty", k.line, k.path)
		}
	}
	accepted := agent.ConfigKeys()
	for _, k := range accepted {
		if !documented[k] {
			t.Errorf("the parser accepts %s, which config.md's key table does not list: add a row (type, default, modes)", k)
		}
	}
	for _, k := range doc {
		if !slices.Contains(accepted, k.path) {
			t.Errorf("config.md:%d lists %s, which the parser does not accept: remove or rename the row", k.line, k.path)
		}
	}
}

// TestConfigDocKeysParse decodes each documented key through ParseConfig
// itself, so the reflection in agent.ConfigKeys and the decoder cannot
// disagree: a documented key may make the config invalid (its value here
// is a placeholder) but never unknown. The negative control proves an
// undocumented key is still reported as unknown in the words looked for.
func TestConfigDocKeysParse(t *testing.T) {
	const unknown = "unknown key"
	for _, k := range documentedKeys(t, "config.md") {
		_, err := agent.ParseConfig(configWith(t, k.path))
		if err != nil && strings.Contains(err.Error(), unknown) {
			t.Errorf("config.md:%d: %s: ParseConfig does not know it: %v", k.line, k.path, err)
		}
	}
	for _, bogus := range []string{"bogus", "vips[].bogus", "health.checks[].bogus", "health.agent_check.weight.bogus", "tunnel.bogus"} {
		_, err := agent.ParseConfig(configWith(t, bogus))
		if err == nil || !strings.Contains(err.Error(), unknown) {
			t.Errorf("negative control: %s: want an %q error, got %v", bogus, unknown, err)
		}
	}
}

// configWith is a config that sets the key at path (lists get one entry)
// to a placeholder, beside `vips: []` so it is never the empty config.
func configWith(t *testing.T, path string) []byte {
	t.Helper()
	root := map[string]any{}
	if !strings.HasPrefix(path, "vips") {
		root["vips"] = []any{}
	}
	cur := root
	parts := strings.Split(path, ".")
	for i, p := range parts {
		name, list := strings.CutSuffix(p, "[]")
		last := i == len(parts)-1
		switch {
		case last && list:
			cur[name] = []any{map[string]any{}}
		case last:
			cur[name] = "x"
		case list:
			next := map[string]any{}
			if l, ok := cur[name].([]any); ok && len(l) > 0 {
				next = l[0].(map[string]any)
			}
			cur[name] = []any{next}
			cur = next
		default:
			next, ok := cur[name].(map[string]any)
			if !ok {
				next = map[string]any{}
				cur[name] = next
			}
			cur = next
		}
	}
	b, err := yaml.Marshal(root)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestDocExamplesParse keeps every whole config shown in the README and
// config.md (a ```yaml block starting at the top level with mode: or
// vips:) valid for the parser.
func TestDocExamplesParse(t *testing.T) {
	n := 0
	for _, path := range []string{"../README.md", "config.md"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		blocks := strings.Split(string(b), "```yaml\n")
		for _, blk := range blocks[1:] {
			text, _, _ := strings.Cut(blk, "```")
			if !strings.HasPrefix(text, "mode:") && !strings.HasPrefix(text, "vips:") {
				continue // a fragment (one section), not a whole config
			}
			n++
			if _, err := agent.ParseConfig([]byte(text)); err != nil {
				t.Errorf("%s: example config %q...: %v", path, strings.SplitN(text, "\n", 2)[0], err)
			}
		}
	}
	if n < 2 {
		t.Errorf("found %d example configs in README.md and config.md, want at least 2", n)
	}
}
