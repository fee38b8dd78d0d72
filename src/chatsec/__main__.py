from chatsec.cli.main import main

main()
