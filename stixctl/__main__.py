from stixctl.entry import run

run()
