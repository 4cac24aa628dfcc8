package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/dsr-agent/dsr-agent/agent"
)

// checkCommand is for a director's MISC_CHECK (keepalived) or any script:
// it asks a real server's health endpoint and exits with keepalived's codes
// (0 up, 1 down), so the director needs no curl and no parsing.
func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "ask a real server's /healthz (keepalived MISC_CHECK: exit 0 up, 1 down)",
		ArgsUsage: "[HOST[:PORT]]",
		Description: "Without HOST, this host's own health.listen from the config. PORT defaults to 8558.\n" +
			"keepalived: MISC_CHECK { misc_path \"/usr/bin/dsr-agent check 192.0.2.21\" misc_timeout 3 }",
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "timeout", Value: 2 * time.Second, Usage: "give up (down) after `D`"},
		},
		Action: checkCmd,
	}
}

func checkCmd(c *cli.Context) error {
	if c.NArg() > 1 {
		return fmt.Errorf("%w: check takes one HOST[:PORT], got %d arguments", errUsage, c.NArg())
	}
	target := c.Args().First()
	if target == "" {
		cfg, err := agent.LoadConfig(c.String("config"), c.String("config-dir"))
		if err != nil {
			return err
		}
		if cfg.Health == nil || cfg.Health.Listen == "" {
			return fmt.Errorf("%w: no HOST given and the config has no health.listen", errUsage)
		}
		target = cfg.Health.Listen
	}
	addr, err := healthAddr(target)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return cli.Exit(fmt.Sprintf("down: %s: %v", addr, err), exitFailure)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	msg := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return cli.Exit(fmt.Sprintf("down: %s: %d %s", addr, resp.StatusCode, msg), exitFailure)
	}
	fmt.Fprintf(c.App.Writer, "up: %s: %s\n", addr, msg)
	return nil
}

// healthAddr adds the default port to HOST, [V6] or a bare IPv6 address.
func healthAddr(s string) (string, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		if host == "" || port == "" {
			return "", fmt.Errorf("check target %q: expected HOST[:PORT]", s)
		}
		return s, nil
	}
	host := strings.Trim(s, "[]")
	if host == "" || strings.ContainsAny(host, "/ ") {
		return "", fmt.Errorf("check target %q: expected HOST[:PORT]", s)
	}
	return net.JoinHostPort(host, fmt.Sprint(agent.DefaultHealthPort)), nil
}
