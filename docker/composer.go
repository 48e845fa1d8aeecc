package docker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"unicode/utf8"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"

	"github.com/berth-ops/berth"
	"github.com/berth-ops/berth/events"
)

var _ berth.Composer = (*Engine)(nil)

// ComposeTailLines is the number of Compose's last output lines a failed
// Compose run reports (Data["output"] of its error).
const ComposeTailLines = 50

// maxComposeLine is the longest output line of Compose passed on; the rest
// of a longer line is dropped with a marker.
const maxComposeLine = 8 << 10

// Compose runs `docker compose -p PROJECT -f FILE... --ansi never
// --progress plain ARGS...` (with ComposeBinary) in spec.Dir with an
// argument vector, calling line (when not nil) with each output line as
// it comes. Stdout and stderr are one pipe, so lines keep the order
// Compose writes them in and never mix. Lines are cleaned: ANSI escape
// sequences and other control characters are removed, a line redrawn with
// carriage returns keeps its last version, blank lines are dropped, and a
// line is cut at 8 KiB. With spec.Tag, every process of the run carries
// BERTH_OP=<tag> in its environment (see StopOperation).
//
// spec.Project must be a valid compose project name, spec.Files clean
// relative names (see ValidateComposeFile), spec.Tag empty or a valid
// operation tag (see StopOperation), and no argument may contain a NUL
// byte: otherwise the error is CodeBadRequest and nothing runs.
//
// A non-zero exit is an *events.Error with failCode (CodeInternal when
// empty), a message ending with Compose's last lines, a hint chosen by
// failCode, and Data "output" (the last ComposeTailLines lines, a
// []string) and "exit_code". A missing compose binary or plugin and an
// unreachable engine are CodeDockerUnavailable. When ctx ends, the whole
// process group of Compose is killed: its deadline is CodeTimeout (with
// Data "output" too), its cancellation ctx.Err() wrapped. On Linux,
// Compose is killed too when the worker dies.
func (e *Engine) Compose(ctx context.Context, spec berth.ComposeSpec, failCode events.Code, line func(string), args ...string) error {
	if failCode == "" {
		failCode = events.CodeInternal
	}
	err := e.runCompose(ctx, spec, nil, line, args...)
	var exit *composeExit
	if !errors.As(err, &exit) {
		return err
	}
	return events.Errorf(failCode, "%s", exit.Error()).
		WithHint(composeHint(failCode)).
		With("output", exit.lines).
		With("exit_code", exit.code)
}

// composeHint is the hint of a failed Compose run.
func composeHint(code events.Code) string {
	switch code {
	case events.CodeBuildFailed:
		return "fix the build error above and deploy again"
	case events.CodeHealthFailed:
		return "a service did not become healthy (or stopped): read its logs and its healthcheck, fix it and deploy again"
	}
	return "read Compose's output above, fix the cause and try again"
}

// shorten cuts s to at most n bytes, on a rune boundary, marking the cut.
func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// lineRing keeps the last max lines.
type lineRing struct {
	lines []string
	max   int
}

func (r *lineRing) add(s string) {
	if len(r.lines) < r.max {
		r.lines = append(r.lines, s)
		return
	}
	copy(r.lines, r.lines[1:])
	r.lines[len(r.lines)-1] = s
}

// readComposeLines reads r to its end, passing each cleaned, non-blank
// line to fn (see cleanLine); a last line without a newline is passed on
// too. A line longer than maxComposeLine is cut with a marker.
func readComposeLines(r io.Reader, fn func(string)) {
	buf := make([]byte, 32<<10)
	var cur []byte
	dropped := 0
	emit := func() {
		s := cleanLine(string(cur))
		if dropped > 0 {
			s += fmt.Sprintf(" … [%d bytes cut]", dropped)
		}
		if s != "" {
			fn(s)
		}
		cur, dropped = cur[:0], 0
	}
	for {
		n, err := r.Read(buf)
		b := buf[:n]
		for len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			chunk := b
			if i >= 0 {
				chunk = b[:i]
			}
			if room := maxComposeLine - len(cur); len(chunk) > room {
				dropped += len(chunk) - room
				chunk = chunk[:room]
			}
			cur = append(cur, chunk...)
			if i < 0 {
				break
			}
			emit()
			b = b[i+1:]
		}
		if err != nil {
			if len(cur) > 0 || dropped > 0 {
				emit()
			}
			return
		}
	}
}

// ansiRe matches the ANSI escape sequences: CSI (colors, cursor moves,
// erases), OSC (titles, links) and the two-byte escapes.
var ansiRe = regexp.MustCompile(`\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])`)

// cleanLine removes ANSI escape sequences from one output line, keeps the
// text after its last carriage return (a progress redraw; a trailing "\r"
// does not count), removes the other control characters but tabs, makes
// it valid UTF-8 and trims its trailing space. A blank line becomes "".
func cleanLine(s string) string {
	if strings.IndexByte(s, 0x1b) >= 0 {
		s = ansiRe.ReplaceAllString(s, "")
	}
	s = strings.TrimRight(s, "\r")
	if i := strings.LastIndexByte(s, '\r'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.Map(func(r rune) rune {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	s = strings.TrimRight(s, " \t")
	if strings.TrimSpace(s) == "" {
		return ""
	}
	return s
}

// TagImage tags an image, by ID or reference, as ref (repo:tag). A missing
// image is CodeNotFound, an invalid reference CodeBadRequest.
func (e *Engine) TagImage(ctx context.Context, img, ref string) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	if img == "" || ref == "" {
		return events.Errorf(events.CodeBadRequest, "tag image %q as %q: empty image or reference", img, ref)
	}
	err := e.cli.ImageTag(ctx, img, ref)
	if err == nil {
		return nil
	}
	what := fmt.Sprintf("tag image %s as %s", img, ref)
	// The client checks both references before any request, with errors
	// of its own (not errdefs' invalid parameter).
	if msg := err.Error(); strings.HasPrefix(msg, "Error parsing reference:") ||
		strings.Contains(msg, "refusing to create a tag with a digest reference") {
		return events.Errorf(events.CodeBadRequest, "%s: %v", what, err).
			WithHint("a tag reference is repository:tag, lowercase, such as registry.example/app:release-1")
	}
	return e.mapErr(err, what)
}

// RemoveImage removes the tag ref, never forcing and never pruning
// untagged parents: the image itself goes only with its last tag, and an
// image a container uses is not removed (CodeConflict). A missing ref is
// not an error.
func (e *Engine) RemoveImage(ctx context.Context, ref string) error {
	if err := e.ready(ctx); err != nil {
		return err
	}
	if ref == "" {
		return events.Errorf(events.CodeBadRequest, "remove image: empty reference")
	}
	_, err := e.cli.ImageRemove(ctx, ref, image.RemoveOptions{Force: false, PruneChildren: false})
	switch {
	case err == nil:
		return nil
	case cerrdefs.IsNotFound(err):
		return nil
	case cerrdefs.IsConflict(err):
		return events.Errorf(events.CodeConflict, "remove image %s: %v", ref, err).
			WithHint("the image is in use (by a container, or under several names when removed by ID); it was left in place")
	}
	return e.mapErr(err, "remove image "+ref)
}

// ImageID resolves an image reference (or ID) to its image ID
// ("sha256:..."), or CodeNotFound.
func (e *Engine) ImageID(ctx context.Context, ref string) (string, error) {
	if err := e.ready(ctx); err != nil {
		return "", err
	}
	if ref == "" {
		return "", events.Errorf(events.CodeBadRequest, "image id: empty reference")
	}
	insp, err := e.cli.ImageInspect(ctx, ref)
	if err != nil {
		return "", e.mapErr(err, "inspect image "+ref)
	}
	return insp.ID, nil
}

// ServiceLogsTail returns the last n log lines of a container, oldest
// first, as "stdout: line" or "stderr: line" (for deploy reports). n = 0
// returns none; a negative n is CodeBadRequest, a missing container
// CodeNotFound.
func (e *Engine) ServiceLogsTail(ctx context.Context, containerID string, n int) ([]string, error) {
	if n < 0 {
		return nil, events.Errorf(events.CodeBadRequest, "negative log tail %d", n)
	}
	if n == 0 {
		return nil, nil
	}
	var out []string
	err := e.Logs(ctx, containerID, berth.LogOptions{Tail: n}, func(l events.LogLine) error {
		out = append(out, l.Stream+": "+l.Line)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}
