//go:build !unix

package federate

import "time"

func cpuTime() time.Duration { return 0 }
