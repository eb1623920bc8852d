package main

import (
	"flag"
	"fmt"
	"log/slog"

	"golang.org/x/sys/unix"

	mergefs "github.com/mergefs/mergefs/fs"
	"github.com/mergefs/mergefs/internal/bytesize"
)

// limitFlags are the flags that bound what one user, and the mount, can make the daemon hold.
type limitFlags struct {
	maxBuffered, maxBufferedPerUser string
	maxOpenPerUser                  int
	rejectedMax, rejectedFileMax    string
}

func (l *limitFlags) register(fl *flag.FlagSet) {
	fl.StringVar(&l.maxBuffered, "max-buffered", "auto", "record content held for open handles (snapshots and buffered writes), all users together: a `size`, or auto (a quarter of RAM, at most 1GiB); past it writes fail with ENOSPC, opens with ENOMEM")
	fl.StringVar(&l.maxBufferedPerUser, "max-buffered-per-user", "auto", "one user's share of --max-buffered: a `size`, or auto (a quarter of --max-buffered); past it writes fail with EDQUOT, opens with ENOMEM")
	fl.IntVar(&l.maxOpenPerUser, "max-open-per-user", 0, "files and directories one user may hold open through the daemon (`count`; 0: a quarter of the daemon's descriptor limit); past it opens fail with EMFILE")
	fl.StringVar(&l.rejectedMax, "rejected-max", "256MiB", "bytes of refused content kept in <state-dir>/rejected (`size`; the oldest files go first)")
	fl.StringVar(&l.rejectedFileMax, "rejected-file-max", "1MiB", "bytes kept of one refused content (`size`; the file's name gives the full size)")
}

// maxBufferedAuto bounds the automatic --max-buffered.
const maxBufferedAuto = 1 << 30

// descriptorReserve is what the daemon keeps of its descriptor limit for itself (commits' temporary
// files, the journal, metrics connections), beyond the files it holds for users.
const descriptorReserve = 256

// parse checks the flags and computes the automatic values; fileLimit is the daemon's descriptor
// limit (after raiseFileLimit).
func (l *limitFlags) parse(fileLimit uint64) (mergefs.Limits, mergefs.RejectedLimits, error) {
	var lim mergefs.Limits
	var rej mergefs.RejectedLimits
	var err error
	if l.maxBuffered == "auto" {
		var si unix.Sysinfo_t
		if err := unix.Sysinfo(&si); err != nil {
			return lim, rej, fmt.Errorf("--max-buffered auto: %w", err)
		}
		lim.MaxBuffered = min(int64(si.Totalram)*int64(si.Unit)/4, maxBufferedAuto)
	} else if lim.MaxBuffered, err = bytesize.Parse(l.maxBuffered); err != nil {
		return lim, rej, fmt.Errorf("--max-buffered: %w", err)
	}
	if l.maxBufferedPerUser == "auto" {
		lim.MaxBufferedPerUser = lim.MaxBuffered / 4
	} else if lim.MaxBufferedPerUser, err = bytesize.Parse(l.maxBufferedPerUser); err != nil {
		return lim, rej, fmt.Errorf("--max-buffered-per-user: %w", err)
	}
	if lim.MaxBuffered < 1<<20 || lim.MaxBufferedPerUser < 1<<20 {
		return lim, rej, fmt.Errorf("--max-buffered and --max-buffered-per-user must be at least 1MiB")
	}
	if fileLimit > descriptorReserve {
		lim.MaxOpen = int(min(fileLimit-descriptorReserve, 1<<30))
	}
	switch {
	case l.maxOpenPerUser < 0:
		return lim, rej, fmt.Errorf("--max-open-per-user must not be negative")
	case l.maxOpenPerUser > 0:
		lim.MaxOpenPerUser = l.maxOpenPerUser
	default:
		lim.MaxOpenPerUser = max(lim.MaxOpen/4, 16)
	}
	if rej.MaxTotal, err = bytesize.Parse(l.rejectedMax); err != nil {
		return lim, rej, fmt.Errorf("--rejected-max: %w", err)
	}
	if rej.MaxFile, err = bytesize.Parse(l.rejectedFileMax); err != nil {
		return lim, rej, fmt.Errorf("--rejected-file-max: %w", err)
	}
	return lim, rej, nil
}

// raiseFileLimit raises the daemon's descriptor limit (RLIMIT_NOFILE) to its hard limit, logs it, and
// returns the limit in force.
func raiseFileLimit(logger *slog.Logger) uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		logger.Warn("cannot read the descriptor limit", "err", err)
		return 0
	}
	if rl.Cur < rl.Max {
		raised := unix.Rlimit{Cur: rl.Max, Max: rl.Max}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &raised); err != nil {
			logger.Warn("cannot raise the descriptor limit to its hard limit", "soft", rl.Cur, "hard", rl.Max, "err", err)
			return rl.Cur
		}
		rl = raised
	}
	logger.Info("descriptor limit", "limit", rl.Cur)
	return rl.Cur
}
