//go:build unix

package docker

import (
	"os"
	"os/exec"
	"syscall"
)

// setProcessGroup runs cmd in its own process group and makes the
// context's cancellation kill the group (the docker CLI runs the compose
// plugin as a child, and Compose may start processes of its own, that
// killing cmd alone would leave running). On Linux the kernel also kills
// cmd when the thread that started it ends.
func setProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
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
