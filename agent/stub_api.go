package agent

// Temporary API skeleton so the CLI compiles while the core lands.

import "errors"

var (
	ErrInvalidConfig = errors.New("invalid config")
	ErrPrivileges    = errors.New("insufficient privileges")
)

type Config struct {
	Mode string
	VIPs []struct{}
}

func LoadConfig(path string) (*Config, error) { return nil, errors.New("not implemented") }

type Host struct{}

func OpenHost(stateDir string) (*Host, error)   { return nil, errors.New("not implemented") }
func (h *Host) Close()                          {}
func (h *Host) Validate(*Config) error          { return nil }
func (h *Host) Plan(*Config) (*Plan, error)     { return nil, nil }
func (h *Host) Apply(*Config) (*Plan, error)    { return nil, nil }
func (h *Host) Remove() (*Plan, error)          { return nil, nil }
func (h *Host) Status(*Config) (*Report, error) { return nil, nil }
func CheckPrivileges(string) error              { return nil }

type Plan struct{}

func (p *Plan) Empty() bool    { return true }
func (p *Plan) String() string { return "" }

type Report struct{ InSync bool }

func (r *Report) String() string { return "" }
