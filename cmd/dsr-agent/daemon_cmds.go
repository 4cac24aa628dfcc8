package main

import (
	"errors"

	"github.com/urfave/cli/v2"
)

// daemonCommands are run, drain and undrain (issue 4 replaces these stubs).
func daemonCommands() []*cli.Command {
	notYet := func(*cli.Context) error { return errors.New("not implemented yet") }
	return []*cli.Command{
		{Name: "run", Usage: "the daemon: apply, then keep the host converged and serve health", Action: notYet},
		{Name: "drain", Usage: "take the host out of rotation (health says so); survives restarts", Action: notYet},
		{Name: "undrain", Usage: "put the host back into rotation", Action: notYet},
	}
}
