package main

import (
	"testing"

	"github.com/pgrealtime/pgrealtime/internal/pgtest"
)

func TestMain(m *testing.M) {
	sweepStaleBinaries()
	pgtest.Main(m)
}
