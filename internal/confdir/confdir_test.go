package confdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func files(pairs ...string) []File {
	var fs []File
	for i := 0; i+1 < len(pairs); i += 2 {
		fs = append(fs, File{Path: pairs[i], Data: []byte(pairs[i+1]), DropIn: i > 0})
	}
	return fs
}

// effective decodes the merged tree into a generic value.
func effective(t *testing.T, m *Merged) map[string]any {
	t.Helper()
	var v map[string]any
	if err := m.Root.Decode(&v); err != nil {
		t.Fatalf("decode merged tree: %v", err)
	}
	return v
}

func TestMergeRules(t *testing.T) {
	m, err := Merge(files(
		"config.yaml", "mode: loopback\nvips:\n  - address: 192.0.2.10\nhealth:\n  listener_grace: 30s\n  checks:\n    - {name: web, tcp: 127.0.0.1:80}\n",
		"config.d/10-a.yaml", "vips:\n  - address: 192.0.2.11\nhealth:\n  listen: 192.0.2.21:8558\n",
		"config.d/20-b.yaml", "mode: arptables\nhealth:\n  listener_grace: 5s\n  checks:\n    - {name: api, tcp: 127.0.0.1:81}\n",
	))
	if err != nil {
		t.Fatal(err)
	}
	got := effective(t, m)
	if got["mode"] != "arptables" {
		t.Errorf("mode = %v, want the later file's arptables", got["mode"])
	}
	vips := got["vips"].([]any)
	if len(vips) != 2 || vips[0].(map[string]any)["address"] != "192.0.2.10" || vips[1].(map[string]any)["address"] != "192.0.2.11" {
		t.Errorf("vips = %v, want the main file's then the drop-in's", vips)
	}
	h := got["health"].(map[string]any)
	if h["listener_grace"] != "5s" || h["listen"] != "192.0.2.21:8558" {
		t.Errorf("health = %v: want listen from 10-a and listener_grace from 20-b", h)
	}
	if checks := h["checks"].([]any); len(checks) != 2 {
		t.Errorf("health.checks = %v, want both files' checks", checks)
	}

	for path, want := range map[string]string{
		"mode":                  "config.d/20-b.yaml:1",
		"vips[0].address":       "config.yaml:3",
		"vips[1].address":       "config.d/10-a.yaml:2",
		"vips[1]":               "config.d/10-a.yaml:2",
		"vips[1].ports[0].port": "config.d/10-a.yaml:2", // not written: the entry it belongs to
		"health.listen":         "config.d/10-a.yaml:4",
		"health.listener_grace": "config.d/20-b.yaml:3",
		"health.checks[1].name": "config.d/20-b.yaml:5",
		"health.checks[0].tcp":  "config.yaml:7",
	} {
		o, ok := m.Origin(path)
		if !ok || o.String() != want {
			t.Errorf("Origin(%s) = %v %v, want %s", path, o, ok, want)
		}
	}
	if o, ok := m.Origin("return_via.gateway"); ok {
		t.Errorf("Origin of a field no file wrote = %v, want none", o)
	}
}

func TestMergeErrorsNameFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		fs   []File
		want string
	}{
		{"kind mismatch", files("config.yaml", "vips:\n  - address: 192.0.2.10\n", "d/10.yaml", "mode: loopback\nvips: {address: 192.0.2.11}\n"),
			"d/10.yaml:2: vips is a mapping here but a list at config.yaml:1"},
		{"nested mismatch", files("config.yaml", "health:\n  checks: []\n", "d/10.yaml", "health:\n  checks: 3\n"),
			"d/10.yaml:2: health.checks is a value here but a list at config.yaml:2"},
		{"duplicate key in one file", files("config.yaml", "vips: []\n", "d/10.yaml", "health:\n  listen: a\n  listen: b\n"),
			`d/10.yaml:3: key "listen" set twice in one mapping (also at line 2)`},
		{"duplicate top key", files("config.yaml", "mode: loopback\nvips: []\nmode: tunnel\n"),
			`config.yaml:3: key "mode" set twice`},
		{"syntax", files("config.yaml", "vips: []\n", "d/10.yaml", "vips: [\n"),
			"d/10.yaml:"},
		{"two documents", files("config.yaml", "vips: []\n", "d/10.yaml", "mode: loopback\n---\nmode: tunnel\n"),
			"d/10.yaml:2: more than one YAML document"},
		{"top not a mapping", files("config.yaml", "vips: []\n", "d/10.yaml", "- 1\n"),
			"d/10.yaml:1: expected a mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Merge(tc.fs)
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want prefix %q", err, tc.want)
			}
		})
	}
}

func TestMergeEmptyAndNull(t *testing.T) {
	// An empty drop-in sets nothing; `key:` (null) is filled by a later file.
	m, err := Merge(files("config.yaml", "health:\nvips: []\n", "d/05.yaml", "# nothing yet\n", "d/10.yaml", "health:\n  listen: 192.0.2.21:8558\n"))
	if err != nil {
		t.Fatal(err)
	}
	if h := effective(t, m)["health"].(map[string]any); h["listen"] != "192.0.2.21:8558" {
		t.Errorf("health = %v", h)
	}
	m, err = Merge(files("config.yaml", "# only comments\n"))
	if err != nil || m.Root != nil {
		t.Errorf("comment-only file: root %v err %v, want no tree (the caller decides it is invalid)", m.Root, err)
	}
}

func TestReadOrderAndFilter(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "config.yaml")
	d := filepath.Join(dir, "config.d")
	must(t, os.WriteFile(main, []byte("vips: []\n"), 0o644))
	must(t, os.Mkdir(d, 0o755))
	for _, n := range []string{"20-b.yaml", "10-a.yaml", "99-z.yaml.rpmnew", ".hidden.yaml", "README", "15-c.yml"} {
		must(t, os.WriteFile(filepath.Join(d, n), []byte("vips: []\n"), 0o644))
	}
	fs, err := Read(main, d, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range fs {
		got = append(got, filepath.Base(f.Path))
	}
	if strings.Join(got, " ") != "config.yaml 10-a.yaml 20-b.yaml" {
		t.Errorf("files = %v, want config.yaml then *.yaml in lexical order", got)
	}
	if fs, err := Read(main, filepath.Join(dir, "absent"), 1<<20); err != nil || len(fs) != 1 {
		t.Errorf("missing dir: %d files, err %v; want the main file only", len(fs), err)
	}
	must(t, os.Mkdir(filepath.Join(d, "sub.yaml"), 0o755))
	if _, err := Read(main, d, 1<<20); err == nil || !strings.Contains(err.Error(), "sub.yaml: not a regular file") {
		t.Errorf("a directory named *.yaml: err = %v", err)
	}
	must(t, os.Remove(filepath.Join(d, "sub.yaml")))
	must(t, os.WriteFile(filepath.Join(d, "30-big.yaml"), make([]byte, 2048), 0o644))
	if _, err := Read(main, d, 1024); err == nil || !strings.Contains(err.Error(), "30-big.yaml: larger than 1 KiB") {
		t.Errorf("oversized drop-in: err = %v", err)
	}
}

func TestPrintNamesOrigins(t *testing.T) {
	m, err := Merge(files(
		"config.yaml", "mode: loopback # the default\nvips:\n  - {address: 192.0.2.10, ports: [{port: 80}]}\n",
		"config.d/10-host.yaml", "vips:\n  - address: 192.0.2.11\nhealth: {listen: 192.0.2.21:8558}\n",
	))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := m.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"mode: loopback # config.yaml:1\n",
		"address: 192.0.2.10 # config.yaml:3",
		"port: 80 # config.yaml:3",
		"address: 192.0.2.11 # config.d/10-host.yaml:2",
		"listen: 192.0.2.21:8558 # config.d/10-host.yaml:3",
		"#   config.d/10-host.yaml\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("print lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "the default") {
		t.Errorf("print kept a source comment:\n%s", out)
	}
	// What it prints is the effective config itself: it parses back to the
	// same values.
	var back, orig map[string]any
	must(t, yaml.Unmarshal([]byte(out), &back))
	must(t, m.Root.Decode(&orig))
	if a, b := yamlString(t, back), yamlString(t, orig); a != b {
		t.Errorf("printed config differs from the merged one:\n%s\n---\n%s", a, b)
	}
}

func yamlString(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	must(t, err)
	return string(b)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
