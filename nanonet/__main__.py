from nanonet.cli import main

main()
