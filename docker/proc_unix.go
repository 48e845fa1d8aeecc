//go:build unix

package docker

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup runs cmd in its own process group and makes the context's
// cancellation kill the group: the docker CLI runs the compose plugin as a
// child that killing the CLI alone would leave running.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if cmd.Process == nil {
			return nil
		}
		err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if err == syscall.ESRCH {
			return os.ErrProcessDone
		}
		return err
	}
}
