package progress

// StepInfo is what a step's announcement can say beyond its name.
type StepInfo struct {
	// Emulated is the platform a RUN step runs for under emulation
	// (QEMU through binfmt_misc), "" when it runs natively.
	Emulated string
}

// InfoPrinter is implemented by printers that show StepInfo.
type InfoPrinter interface {
	StepInfo(name string, info StepInfo) Step
}

// StepWith announces a step with info when p shows it, else by name alone.
func StepWith(p Printer, name string, info StepInfo) Step {
	if ip, ok := p.(InfoPrinter); ok {
		return ip.StepInfo(name, info)
	}
	return p.Step(name)
}

// StepInfo announces a step with info.
func (p *printer) StepInfo(name string, info StepInfo) Step {
	return p.step(name, info)
}
