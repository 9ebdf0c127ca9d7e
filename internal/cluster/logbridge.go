package cluster

import (
	"bytes"
	"log/slog"
	"strings"
)

// logBridge receives memberlist's log lines ("[LEVEL] memberlist: text") and
// passes them to slog at debug. Memberlist has no hook for suspicion, so the
// bridge also counts the lines that report one; the wording it matches is
// pinned by a test against memberlist's own output.
type logBridge struct {
	logger *slog.Logger
	event  func(event string)
}

func (b *logBridge) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		level, text := splitMemberlistLine(string(line))
		if text == "" {
			continue
		}
		if e := classifyMemberlistLine(text); e != "" && b.event != nil {
			b.event(e)
		}
		b.logger.Debug("memberlist", "memberlist_level", level, "line", text)
	}
	return len(p), nil
}

// splitMemberlistLine splits "[WARN] memberlist: text" into "warn" and "text".
func splitMemberlistLine(line string) (level, text string) {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "[") {
		if end := strings.IndexByte(line, ']'); end > 0 {
			level = strings.ToLower(line[1:end])
			line = strings.TrimSpace(line[end+1:])
		}
	}
	return level, strings.TrimPrefix(line, "memberlist: ")
}

// classifyMemberlistLine maps the lines that report suspicion to an event.
func classifyMemberlistLine(text string) string {
	switch {
	case strings.HasPrefix(text, "Suspect ") && strings.Contains(text, " has failed"):
		return eventSuspect
	case strings.HasPrefix(text, "Marking ") && strings.Contains(text, " as failed"):
		return eventFailed
	case strings.HasPrefix(text, "Refuting a suspect message"), strings.HasPrefix(text, "Refuting a dead message"):
		return eventRefute
	}
	return ""
}
