//go:build !unix

package docker

import "os/exec"

// setProcessGroup leaves cmd as it is: process groups are a unix notion.
func setProcessGroup(*exec.Cmd) {}
