package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfigDir writes config.yaml and the named drop-ins under a temp dir
// and returns the config path and the drop-in directory.
func writeConfigDir(t *testing.T, main string, dropIns map[string]string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	d := filepath.Join(dir, "config.d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, text := range dropIns {
		if err := os.WriteFile(filepath.Join(d, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return path, d
}

// One shared config.yaml, per-host values in a drop-in.
func TestLoadConfigDropIns(t *testing.T) {
	path, dir := writeConfigDir(t,
		"mode: loopback\nvips:\n  - address: 192.0.2.10\n    ports: [{port: 80}]\nhealth:\n  checks:\n    - {name: web, tcp: 127.0.0.1:80}\n",
		map[string]string{
			"10-host.yaml": "health:\n  listen: 192.0.2.21:8558\n  checks:\n    - {name: api, tcp: 127.0.0.1:81}\n",
			"20-vip.yaml":  "vips:\n  - address: 192.0.2.11\nmode: arptables\n",
		})
	cfg, err := LoadConfig(path, dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mode != ModeARPTables {
		t.Errorf("mode %s, want the later file's arptables", cfg.Mode)
	}
	if len(cfg.VIPs) != 2 || cfg.VIPs[1].Address.String() != "192.0.2.11" {
		t.Errorf("VIPs %v, want config.yaml's then 20-vip.yaml's", cfg.VIPs)
	}
	if cfg.Health == nil || cfg.Health.Listen != "192.0.2.21:8558" || len(cfg.Health.Checks) != 2 {
		t.Errorf("health %+v, want listen from 10-host.yaml and both checks", cfg.Health)
	}
	if got, want := cfg.Origin("vips[1].address"), filepath.Join(dir, "20-vip.yaml")+":2"; got != want {
		t.Errorf("Origin(vips[1].address) = %q, want %q", got, want)
	}
	// Without the directory the main file alone is the config.
	cfg, err = LoadConfig(path, "")
	if err != nil || len(cfg.VIPs) != 1 || cfg.Mode != ModeLoopback {
		t.Errorf("no drop-in dir: %v %v", cfg, err)
	}
}

func TestLoadConfigDropInErrorsNameFileAndLine(t *testing.T) {
	main := "vips:\n  - address: 192.0.2.10\nhealth:\n  listen: 198.51.100.21:8558\n"
	for _, tc := range []struct {
		name, dropIn string
		want         []string
	}{
		{"unknown key", "vips:\n  - address: 192.0.2.11\n    prot: 80\n", []string{"20-x.yaml:3:", `unknown key "prot"`}},
		{"bad VIP", "vips:\n  - address: 192.0.2.300\n", []string{"20-x.yaml:2: vips[1].address:", `"192.0.2.300"`}},
		{"duplicate VIP across files", "vips:\n  - address: 192.0.2.10\n", []string{"20-x.yaml:2: vips[1].address:", "each VIP listed once"}},
		{"key twice in one file", "mode: loopback\nmode: tunnel\n", []string{"20-x.yaml:2:", `key "mode" already defined at line 1`}},
		{"kind clash", "vips: {address: 192.0.2.11}\n", []string{"20-x.yaml:1"}},
		{"wrong type", "health:\n  listener_grace: [1]\n", []string{"20-x.yaml:2:"}},
		// The clash is between two files: both are named.
		{"VIP that is the main file's health address", "vips:\n  - address: 198.51.100.21\n", []string{"20-x.yaml:2: vips[1].address:", "config.yaml:4: health.listen:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, dir := writeConfigDir(t, main, map[string]string{"10-ok.yaml": "mode: loopback\n", "20-x.yaml": tc.dropIn})
			_, err := LoadConfig(path, dir)
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("err = %v, want invalid config", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestLoadConfigMainFileRules(t *testing.T) {
	// An empty config.yaml stays invalid even when drop-ins add VIPs: it is
	// a truncated write, not "configured elsewhere".
	path, dir := writeConfigDir(t, "# nothing\n", map[string]string{"10.yaml": "vips: []\n"})
	if _, err := LoadConfig(path, dir); !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "config.yaml: the config is empty") {
		t.Errorf("empty main file: %v", err)
	}
	// An empty drop-in sets nothing.
	path, dir = writeConfigDir(t, "vips: []\n", map[string]string{"10.yaml": "# placeholder\n"})
	if cfg, err := LoadConfig(path, dir); err != nil || len(cfg.VIPs) != 0 {
		t.Errorf("empty drop-in: %v %v", cfg, err)
	}
	// A path that is not a directory is an error, not "no drop-ins".
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path, file); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("drop-in dir is a file: %v", err)
	}
}
