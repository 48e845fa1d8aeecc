//go:build !unix

package filesync

import (
	"errors"
	"io/fs"
	"os"
)

const readFlags = os.O_RDONLY

func ownerOf(fi fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }

func chownDenied(err error) bool { return errors.Is(err, fs.ErrPermission) }

func dirNotEmpty(err error) bool { return err != nil && !errors.Is(err, fs.ErrNotExist) }

func absent(err error) bool { return errors.Is(err, fs.ErrNotExist) }
