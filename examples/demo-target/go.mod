module alertprof/demo-target

go 1.19
