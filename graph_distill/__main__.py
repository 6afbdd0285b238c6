from graph_distill.cli import main

main()
