package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ: /proc/<pid>/stat counts CPU time in 1/100 s on Linux.
const clockTick = 10 * time.Millisecond

// cpuTime returns the user+system CPU time consumed so far by process pid
// (its own threads, not its children).
func cpuTime(pid int) (time.Duration, error) {
	u, s, err := cpuTimes(pid)
	return u + s, err
}

// cpuTimes returns the user and the system (kernel) CPU time of pid.
func cpuTimes(pid int) (user, sys time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// The command name may contain spaces: fields start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse /proc/%d/stat utime/stime", pid)
	}
	return time.Duration(ut) * clockTick, time.Duration(st) * clockTick, nil
}

// rssKB returns VmRSS of process pid in KiB.
func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			return strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

// machine describes the host for the report.
func machine() string {
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
				mem = fmt.Sprintf(", %.0f GiB RAM", float64(kb)/(1<<20))
			}
		}
	}
	return fmt.Sprintf("%d CPUs (nproc), %s%s", nprocs(), cpu, mem)
}

// cpuSample is the machine-wide CPU counters of /proc/stat.
type cpuSample struct {
	busy, total int64
	at          time.Time
}

func readCPU() cpuSample {
	s := cpuSample{at: time.Now()}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return s
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	for i := 1; i < len(f) && i <= 8; i++ {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		s.total += v
		if i != 4 && i != 5 { // idle, iowait
			s.busy += v
		}
	}
	return s
}

// sectionLoad is how busy the whole machine was during one measurement:
// every process counts, ours and the rest.
type sectionLoad struct {
	Name      string  `json:"name"`
	Seconds   float64 `json:"seconds"`
	BusyCores float64 `json:"busy_cores"`
	LoadAvg   string  `json:"loadavg"` // 1, 5, 15 min at the end
}

func measureLoad(name string, start cpuSample) sectionLoad {
	end := readCPU()
	l := sectionLoad{Name: name, Seconds: end.at.Sub(start.at).Seconds()}
	if dt := end.total - start.total; dt > 0 {
		l.BusyCores = float64(end.busy-start.busy) / float64(dt) * float64(nprocs())
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			l.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	return l
}
